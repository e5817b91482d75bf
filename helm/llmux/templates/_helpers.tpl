{{/* Chart name, truncated to the 63 characters Kubernetes allows in names and labels. */}}
{{- define "llmux.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "llmux.fullname" -}}
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

{{- define "llmux.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmux.labels" -}}
helm.sh/chart: {{ include "llmux.chart" . }}
{{ include "llmux.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "llmux.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmux.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llmux.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmux.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llmux.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap holding llmux.yaml: the user's own, or the chart's. */}}
{{- define "llmux.configMapName" -}}
{{- default (printf "%s-config" (include "llmux.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{- define "llmux.secretEnvName" -}}
{{- printf "%s-env" (include "llmux.fullname" .) }}
{{- end }}

{{- define "llmux.providersConfigMapName" -}}
{{- printf "%s-providers" (include "llmux.fullname" .) }}
{{- end }}
