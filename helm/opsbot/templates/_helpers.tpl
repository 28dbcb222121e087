{{- define "opsbot.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release name, or release-opsbot when the release name does not say opsbot. */}}
{{- define "opsbot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "opsbot.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "opsbot.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "opsbot.labels" -}}
{{ include "opsbot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "opsbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opsbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "opsbot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "opsbot.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "opsbot.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- if .Values.image.digest -}}
{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "opsbot.pullPolicy" -}}
{{- .Values.image.pullPolicy | default (ternary "IfNotPresent" "Always" (ne .Values.image.digest "")) -}}
{{- end -}}

{{/* SQLite (one replica) unless database.existingSecret names the PostgreSQL URL's Secret. */}}
{{- define "opsbot.sqlite" -}}
{{- if not .Values.database.existingSecret }}true{{ end -}}
{{- end -}}

{{/* The policy's identities as JSON {"users": [...], "groups": [...]}: whom the bot may
impersonate. Fails on a policy that is not YAML. */}}
{{- define "opsbot.identities" -}}
{{- $doc := fromYaml .Values.policy -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "policy is not valid YAML: %s" (get $doc "Error")) -}}
{{- end -}}
{{- $users := list -}}
{{- $groups := list -}}
{{- range $chat, $who := ($doc.identities | default dict) -}}
{{- if kindIs "string" $who -}}
{{- $users = append $users $who -}}
{{- else if kindIs "map" $who -}}
{{- if not $who.user -}}
{{- fail (printf "policy identities: %s maps to no user" $chat) -}}
{{- end -}}
{{- $users = append $users $who.user -}}
{{- range ($who.groups | default list) -}}
{{- $groups = append $groups . -}}
{{- end -}}
{{- else -}}
{{- fail (printf "policy identities: %s must map to a user name or {user, groups}" $chat) -}}
{{- end -}}
{{- end -}}
{{- dict "users" ($users | uniq | sortAlpha) "groups" ($groups | uniq | sortAlpha) | toJson -}}
{{- end -}}
