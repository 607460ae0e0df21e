-- Argo CD health check for pgbackup.dev/BackupPolicy
-- (argocd-cm: resource.customizations.health.pgbackup.dev_BackupPolicy)
hs = {}
local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end
local function text(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the policy"
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the latest spec"
  return hs
end
for _, kind in ipairs({"Ready", "LastBackupSucceeded", "Verified"}) do
  local c = condition(status, kind)
  if c ~= nil and c.status == "False" then
    hs.status = "Degraded"
    hs.message = kind .. ": " .. text(c, "False")
    return hs
  end
end
local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the policy to become Ready"
return hs
