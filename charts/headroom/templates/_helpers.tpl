{{- /* The labels every object of the release carries; the selector is the
part of them that never changes between chart versions (a Deployment's
selector is immutable). */ -}}
{{- define "headroom.selector" -}}
app.kubernetes.io/name: headroom
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "headroom.labels" -}}
{{ include "headroom.selector" . }}
app.kubernetes.io/component: operator
{{- end }}
