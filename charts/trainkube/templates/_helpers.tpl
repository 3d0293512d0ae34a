{{/* The chart's name. */}}
{{- define "trainkube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object it creates. */}}
{{- define "trainkube.fullname" -}}
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

{{- define "trainkube.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainkube.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trainkube.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trainkube.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainkube
{{- end }}

{{- define "trainkube.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trainkube.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trainkube.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The namespaces whose jobs the operator's RBAC covers when rbac.scope is namespaced. */}}
{{- define "trainkube.rbacNamespaces" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (empty .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: the namespaces whose jobs the operator watches (it can read nothing else)" }}
{{- end }}
{{- toJson .Values.watchNamespaces }}
{{- end }}

{{/*
The rules the operator needs where it watches jobs: exactly the API calls in
operator/trainkube/controller (README: "RBAC" says which line needs which). Children are written
by server-side apply (a PATCH that creates what is missing: patch and create).
*/}}
{{- define "trainkube.rules" -}}
# The three kinds: informers list and watch them (cache.py); ttlSecondsAfterFinished deletes
# a finished job (reconcile.py _finished).
- apiGroups: ["trainkube.io"]
  resources: ["llmtrainingjobs", "finetunejobs", "evaljobs"]
  verbs: ["list", "watch", "delete"]
# Their status, replaced with the resourceVersion it was derived from (reconcile.py _write_status).
- apiGroups: ["trainkube.io"]
  resources: ["llmtrainingjobs/status", "finetunejobs/status", "evaljobs/status"]
  verbs: ["update"]
# Attempt Jobs: informer (cache.py), server-side apply (reconcile.py _create_attempt), delete
# (reconcile.py _delete_attempt).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Worker pods: informer (cache.py); an ended attempt's pods deleted at once (_delete_attempt).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "deletecollection"]
# Report ConfigMaps: informer (cache.py); report and run-config ConfigMaps are applied. get and
# update: the workers' Role grants get/patch/update on the report ConfigMap, and RBAC lets the
# operator create (and bind) a Role only with permissions it holds itself.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "get", "create", "patch", "update"]
# The headless Service and the workers' ServiceAccount (children.py, applied).
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["create", "patch"]
# The workers' Role and RoleBinding (children.worker_rbac, applied).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "patch"]
# Claims: read to tell a missing one (observe.py missing_inputs); the checkpoint claim is
# applied when createVolume asks (children.checkpoint_claim).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "patch"]
# No Secret is read: a missing Secret or key shows in the kubelet's FailedMount warning.
# Events: the jobs' own (events.py post_event; kopf posts none), and two informers of Warning
# events, the Job controller's FailedCreate and the kubelet's FailedMount (cache.py), which say
# why workers cannot be created or started.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "watch", "create"]
{{- end }}
