-- Argo CD health check for trainkube jobs (LLMTrainingJob, FineTuneJob, EvalJob share one status
-- shape: operator/trainkube/api/status.py). `obj` is the job; the script returns {status, message}.
--
--   no status yet, or status older than spec  Progressing  waiting for the operator (to observe
--                                                           generation N)
--   condition Failed=True                      Degraded     Failed's reason: message (an EvalJob
--                                                           whose gates failed names those gates)
--   condition Succeeded=True                   Healthy      Succeeded's reason: message
--   condition Suspended=True                   Suspended    Suspended's message
--   anything else                              Progressing  phase, what the conditions say (a
--                                                           missing Secret, a worker that cannot
--                                                           be scheduled, a rollback), progress
--
-- Argo CD runs a script from argocd-cm with only Lua's base, table and package libraries (and a
-- reduced os) unless resource.customizations.useOpenLibs is set: so no string.* or math.* here.

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

-- "Reason: message", or the message alone when it has no reason or the reason is `skip`.
local function said(c, skip)
  local message = c.message or ""
  if c.reason == nil or c.reason == "" or c.reason == skip then
    return message
  end
  if message == "" then
    return c.reason
  end
  return c.reason .. ": " .. message
end

-- "step 120/600, loss 2.3100" from status.progress, or nil before the trainer reported a step.
local function progress(status)
  local p = status.progress
  if p == nil then
    return nil
  end
  local parts = {}
  if p.steps ~= nil then
    parts[#parts + 1] = "step " .. p.steps
  elseif p.step ~= nil and p.step > 0 then
    parts[#parts + 1] = "step " .. tostring(p.step)
  end
  if #parts > 0 and p.loss ~= nil then
    parts[#parts + 1] = "loss " .. p.loss
  end
  if #parts == 0 then
    return nil
  end
  return table.concat(parts, ", ")
end

-- An EvalJob's gate verdicts: passed/total, and each failed gate with its verdict.
local function gates(status)
  if status.gates == nil or #status.gates == 0 then
    return nil, nil
  end
  local passed, failed = 0, {}
  for _, g in ipairs(status.gates) do
    if g.passed == true then
      passed = passed + 1
    else
      failed[#failed + 1] = g.metric .. " (" .. (g.message or "failed") .. ")"
    end
  end
  local count = status.gatesPassed or (tostring(passed) .. "/" .. tostring(#status.gates))
  if #failed == 0 then
    return count, nil
  end
  return count, table.concat(failed, ", ")
end

-- Appends `text` to the list `parts` unless it is nil or empty (a Lua list must have no holes).
local function add(parts, text)
  if text ~= nil and text ~= "" then
    parts[#parts + 1] = text
  end
  return parts
end

local function health(job)
  local status = job.status
  if status == nil or next(status) == nil then
    return "Progressing", "waiting for the operator"
  end
  -- Judge only a status written for the current spec: an edit (suspend, a new deadline) is not
  -- in effect until the operator has observed its generation. Conditions keep the generation
  -- they were last set for: a finished job's Succeeded or Failed stays final after edits, and the
  -- operator moves only status.observedGeneration.
  local generation = job.metadata and job.metadata.generation
  local observed = status.observedGeneration
  if generation ~= nil and (observed == nil or observed < generation) then
    return "Progressing", "waiting for the operator to observe generation " .. tostring(generation)
  end

  local failed = condition(status, "Failed")
  if isTrue(failed) then
    local count, failedGates = gates(status)
    if failedGates ~= nil then
      local reason = failed.reason or "Failed"
      return "Degraded", reason .. ": " .. count .. " gates passed; failed: " .. failedGates
    end
    return "Degraded", said(failed)
  end

  local succeeded = condition(status, "Succeeded")
  if isTrue(succeeded) then
    local parts = add(add({}, said(succeeded)), progress(status))
    local count = gates(status)
    if count ~= nil then
      add(parts, "gates passed " .. count)
    end
    return "Healthy", table.concat(parts, "; ")
  end

  local suspended = condition(status, "Suspended")
  if isTrue(suspended) then
    local parts = add(add({}, said(suspended, "Suspended")), progress(status))
    return "Suspended", table.concat(parts, "; ")
  end

  -- Still on its way: the phase, then what stands in the way or is happening, then progress.
  local phase = status.phase or "Pending"
  local parts = {}
  local rolling = condition(status, "RollingBack")
  if isTrue(rolling) then
    add(parts, said(rolling, phase))
  end
  local planned = condition(status, "Planned")
  if planned ~= nil and planned.status ~= "True" then
    add(parts, said(planned, phase))
  end
  local running = condition(status, "Running")
  if running ~= nil and not (isTrue(rolling) and running.message == rolling.message) then
    add(parts, said(running, phase))
  end
  add(parts, progress(status))
  if #parts == 0 then
    return "Progressing", phase
  end
  return "Progressing", phase .. ": " .. table.concat(parts, "; ")
end

local hs = {}
hs.status, hs.message = health(obj)
return hs
