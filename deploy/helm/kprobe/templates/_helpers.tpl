{{/* Names: <release> when it already says kprobe, else <release>-kprobe; components append -<part>. */}}
{{- define "kprobe.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kprobe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: kprobe
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include "kprobe.selector" (list . "agent") */}}
{{- define "kprobe.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: kprobe
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "kprobe.componentLabels" -}}
{{ include "kprobe.labels" (index . 0) }}
{{ include "kprobe.selector" . }}
{{- end -}}

{{- define "kprobe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kprobe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kprobe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kprobe.scaleout" -}}
{{- if eq .Values.mode "scaleout" -}}true{{- else if eq .Values.mode "embedded" -}}{{- else -}}
{{- fail (printf "mode must be embedded or scaleout, not %q" .Values.mode) -}}
{{- end -}}
{{- end -}}

{{/* Endpoints: the bundled servers' Services, or the external addresses from values. */}}
{{- define "kprobe.kafkaBrokers" -}}
{{- if .Values.kafka.bundled -}}
{{- $fn := include "kprobe.fullname" . -}}
{{- $brokers := list -}}
{{- range $i := until (int .Values.kafka.replicas) -}}
{{- $brokers = append $brokers (printf "%s-kafka-%d.%s-kafka-headless.%s.svc:9092" $fn $i $fn $.Release.Namespace) -}}
{{- end -}}
{{- join "," $brokers -}}
{{- else -}}
{{- required "kafka.brokers is required when kafka.bundled is false" .Values.kafka.brokers -}}
{{- end -}}
{{- end -}}

{{- define "kprobe.clickhouseAddress" -}}
{{- if .Values.clickhouse.bundled -}}
{{- printf "%s-clickhouse:9000" (include "kprobe.fullname" .) -}}
{{- else -}}
{{- required "clickhouse.address is required when clickhouse.bundled is false" .Values.clickhouse.address -}}
{{- end -}}
{{- end -}}

{{- define "kprobe.neo4jUri" -}}
{{- if .Values.neo4j.bundled -}}
{{- printf "bolt://%s-neo4j:7687" (include "kprobe.fullname" .) -}}
{{- else -}}
{{- required "neo4j.uri is required when neo4j.bundled is false" .Values.neo4j.uri -}}
{{- end -}}
{{- end -}}

{{- define "kprobe.neo4jSecret" -}}
{{- default (printf "%s-neo4j-auth" (include "kprobe.fullname" .)) .Values.neo4j.auth.existingSecret -}}
{{- end -}}

{{/* Restricted pod/container security for everything but the agent. */}}
{{- define "kprobe.podSecurity" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kprobe.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ . }}
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "kprobe.pullSecrets" -}}
{{- with .Values.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The agent's capability set: see agent.capabilities / features / sysAdminFallback in values.yaml. */}}
{{- define "kprobe.agentCapabilities" -}}
{{- $caps := list -}}
{{- if .Values.agent.sysAdminFallback -}}
{{- $caps = list "SYS_ADMIN" "SYS_RESOURCE" -}}
{{- else -}}
{{- $caps = .Values.agent.capabilities -}}
{{- end -}}
{{- if .Values.agent.features.processDetails -}}
{{- $caps = append $caps "SYS_PTRACE" -}}
{{- end -}}
{{- toJson (uniq $caps) -}}
{{- end -}}
