-- Argo CD health check for pgbackup.dev/RestoreRequest
-- (argocd-cm: resource.customizations.health.pgbackup.dev_RestoreRequest)
hs = {}
local status = obj.status
local phase = "Pending"
if status ~= nil and status.phase ~= nil then
  phase = status.phase
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Restore succeeded"
  if status.plan ~= nil and status.plan.backup ~= nil then
    hs.message = "Restored backup " .. status.plan.backup
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Restore failed"
  if status.error ~= nil and status.error ~= "" then
    hs.message = "Restore failed: " .. status.error
  end
else
  hs.status = "Progressing"
  hs.message = "Restore " .. phase
end
return hs
