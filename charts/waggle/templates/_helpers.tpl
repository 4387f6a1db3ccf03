{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "waggle.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "waggle.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "waggle.operatorName" -}}
{{- printf "%s-operator" (include "waggle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "waggle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "waggle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "waggle.labels" -}}
{{ include "waggle.selectorLabels" . }}
app.kubernetes.io/part-of: waggle
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "waggle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "waggle.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The rules the operator needs on namespaced objects, shared by the ClusterRole and the Roles. */}}
{{- define "waggle.rules" -}}
- apiGroups: ["waggle.dev"]
  resources: ["clusters", "gateways", "exporters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["waggle.dev"]
  resources: ["clusters/status", "gateways/status", "exporters/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
