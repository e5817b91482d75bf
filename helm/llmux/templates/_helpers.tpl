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

{{/*
The drain deadline in seconds: how long a pod may take from deletion to exit. The preStop sleep,
then (after SIGTERM) llmux's shutdown_delay and shutdown_timeout, then the writes of buffered spend
and spans, each bounded by min(shutdown_timeout, 10 s) (FLUSH_ON_EXIT in src/server/mod.rs).
*/}}
{{- define "llmux.drainDeadline" -}}
{{- $d := .Values.drain }}
{{- $flush := mul 2 (min (int $d.shutdownTimeoutSeconds) 10) }}
{{- add (int $d.preStopSleepSeconds) (int $d.shutdownDelaySeconds) (int $d.shutdownTimeoutSeconds) $flush }}
{{- end }}

{{/* terminationGracePeriodSeconds: derived from the drain settings, or the user's, checked. */}}
{{- define "llmux.terminationGracePeriodSeconds" -}}
{{- $deadline := include "llmux.drainDeadline" . | int }}
{{- $set := .Values.terminationGracePeriodSeconds }}
{{- if or (kindIs "invalid" $set) (eq (toString $set) "") }}
{{- add $deadline (int .Values.drain.graceMarginSeconds) }}
{{- else if le (int $set) $deadline }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed the drain deadline of %d s (drain: preStop %v + shutdown delay %v + shutdown timeout %v + up to 2 x %v s writing spend and spans); raise it or leave it empty to derive it" (int $set) $deadline .Values.drain.preStopSleepSeconds .Values.drain.shutdownDelaySeconds .Values.drain.shutdownTimeoutSeconds (min (int .Values.drain.shutdownTimeoutSeconds) 10)) }}
{{- else }}
{{- int $set }}
{{- end }}
{{- end }}

{{/*
The llmux config as rendered into the ConfigMap: `config` with the drain settings written into
llmux.server (the grace period is derived from them, so they have one source: `drain`).
*/}}
{{- define "llmux.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $llmux := dict }}
{{- if kindIs "map" (get $cfg "llmux") }}
{{- $llmux = get $cfg "llmux" }}
{{- end }}
{{- $server := dict }}
{{- if kindIs "map" (get $llmux "server") }}
{{- $server = get $llmux "server" }}
{{- end }}
{{- if or (hasKey $server "shutdown_delay") (hasKey $server "shutdown_timeout") }}
{{- fail "config.llmux.server.shutdown_delay / shutdown_timeout are set by the chart: use drain.shutdownDelaySeconds / drain.shutdownTimeoutSeconds (terminationGracePeriodSeconds is derived from them)" }}
{{- end }}
{{- $_ := set $server "shutdown_delay" (int .Values.drain.shutdownDelaySeconds) }}
{{- $_ = set $server "shutdown_timeout" (int .Values.drain.shutdownTimeoutSeconds) }}
{{- $_ = set $llmux "server" $server }}
{{- $_ = set $cfg "llmux" $llmux }}
{{- toYaml $cfg }}
{{- end }}

{{/* The pod security context, with the io_uring seccomp profile when one is named. */}}
{{- define "llmux.podSecurityContext" -}}
{{- $ctx := deepCopy (.Values.podSecurityContext | default dict) }}
{{- with .Values.ioUring.localhostProfile }}
{{- $_ := set $ctx "seccompProfile" (dict "type" "Localhost" "localhostProfile" .) }}
{{- end }}
{{- if $ctx }}
{{- toYaml $ctx }}
{{- end }}
{{- end }}

{{/* Container lifecycle: `lifecycle` plus the preStop sleep of drain.preStopSleepSeconds. */}}
{{- define "llmux.lifecycle" -}}
{{- $lc := deepCopy (.Values.lifecycle | default dict) }}
{{- $sleep := int .Values.drain.preStopSleepSeconds }}
{{- if gt $sleep 0 }}
{{- if hasKey $lc "preStop" }}
{{- fail "lifecycle.preStop and drain.preStopSleepSeconds are both set: keep one" }}
{{- end }}
{{- if not (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "drain.preStopSleepSeconds needs the preStop sleep action of Kubernetes >= 1.30 (this cluster: %s); set it to 0 (llmux's shutdown delay does the same job)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $_ := set $lc "preStop" (dict "sleep" (dict "seconds" $sleep)) }}
{{- end }}
{{- if $lc }}
{{- toYaml $lc }}
{{- end }}
{{- end }}
