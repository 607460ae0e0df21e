{{/* Chart name, possibly overridden. */}}
{{- define "pgbackup-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "pgbackup-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pgbackup-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "pgbackup-operator.labels" -}}
helm.sh/chart: {{ include "pgbackup-operator.chart" . }}
{{ include "pgbackup-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pgbackup-operator
{{- end }}

{{/* Labels that select the operator pod. */}}
{{- define "pgbackup-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgbackup-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pgbackup-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pgbackup-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pgbackup-operator.jobServiceAccountName" -}}
{{- default (printf "%s-job" (include "pgbackup-operator.fullname" .)) .Values.jobServiceAccount.name }}
{{- end }}

{{/* The operator image: repository@digest, or repository:tag (default: appVersion). */}}
{{- define "pgbackup-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaces that get a Role and the Job ServiceAccount: the watched ones, or none in cluster-wide mode. */}}
{{- define "pgbackup-operator.jobNamespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- range .Values.watchNamespaces }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- $namespaces | uniq | join "," }}
{{- end }}
