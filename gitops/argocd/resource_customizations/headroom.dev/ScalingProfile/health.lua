-- Health of a Headroom ScalingProfile (headroom.dev/v1alpha1) for Argo CD.
-- It reads the conditions the Headroom operator writes, as kstatus does:
--   the operator has not acted on this generation yet  -> Progressing
--   Stalled=True: progress needs a person               -> Degraded
--   Reconciling=True: a change is being rolled out      -> Progressing
--   Ready=True                                          -> Healthy
--   Ready=False or Unknown otherwise                    -> Progressing
-- Only Lua's base library is used, so it runs as a built-in check and as a
-- resource.customizations.health.headroom.dev_ScalingProfile entry alike.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local generation = obj.metadata.generation
local observed = nil
if obj.status ~= nil then
  observed = obj.status.observedGeneration
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Headroom operator to act on generation " .. generation
  return hs
end

-- at most one of the two is True (Stalled wins if an older operator wrote both)
for _, rule in ipairs({{"Stalled", "Degraded"}, {"Reconciling", "Progressing"}}) do
  local c = condition(rule[1])
  if c ~= nil and c.status == "True" then
    hs.status = rule[2]
    hs.message = describe(c)
    return hs
  end
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Headroom operator to report status"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
