{{- define "opsbot.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "opsbot.labels" -}}
app.kubernetes.io/name: opsbot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "opsbot.selectorLabels" -}}
app.kubernetes.io/name: opsbot
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "opsbot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "opsbot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
