{{/*
The scimgate container and its volumes, shared by the standalone Deployment and by other charts'
pods (sidecar mode).

Public API for a parent chart that lists scimgate as a dependency (mode: sidecar):

  initContainers:                      # when .Values.scimgate.sidecar.nativeSidecar (default)
    {{- include "scimgate.sidecar" . | nindent 8 }}
  containers:
    - name: app ...
    {{- include "scimgate.sidecar" . | nindent 8 }}   # instead, when nativeSidecar is false
  volumes:
    {{- include "scimgate.sidecar.volumes" . | nindent 8 }}

`.` is the parent's root context; the templates read the subchart's values and metadata from
`.Subcharts.scimgate` (pass `(dict "root" . "subchart" "ALIAS")` for a dependency alias).
*/}}

{{/* Resolves the argument of the public templates to a scimgate context (Values/Release/Chart). */}}
{{- define "scimgate.sidecar.resolve" -}}
{{- $root := . }}
{{- $key := "scimgate" }}
{{- if and (kindIs "map" .) (hasKey . "root") }}
{{- $root = .root }}
{{- $key = .subchart | default "scimgate" }}
{{- end }}
{{- $sub := get ($root.Subcharts | default dict) $key }}
{{- if not $sub }}
{{- fail (printf "scimgate.sidecar: no subchart %q in this chart's dependencies" $key) }}
{{- end }}
{{- if ne $sub.Values.mode "sidecar" }}
{{- fail (printf "scimgate.sidecar: set %s.mode: sidecar, or the subchart also renders its own Deployment" $key) }}
{{- end }}
{{- toYaml (dict "Values" $sub.Values "Release" (dict "Name" $root.Release.Name "Namespace" $root.Release.Namespace) "Chart" (dict "AppVersion" $sub.Chart.AppVersion)) }}
{{- end }}

{{/* One container list entry: native sidecar (for initContainers) or a regular container. */}}
{{- define "scimgate.sidecar" -}}
{{- $ctx := include "scimgate.sidecar.resolve" . | fromYaml }}
{{- include "scimgate.container" (dict "ctx" $ctx "sidecar" true "native" $ctx.Values.sidecar.nativeSidecar) }}
{{- end }}

{{/* The volumes the sidecar entry mounts: list entries for the pod's `volumes`. */}}
{{- define "scimgate.sidecar.volumes" -}}
{{- $ctx := include "scimgate.sidecar.resolve" . | fromYaml }}
{{- include "scimgate.volumes" $ctx }}
{{- end }}

{{/*
(dict "ctx" <Values/Release/Chart> "sidecar" bool "native" bool) -> one container list entry.
Port names differ in sidecar mode so they cannot clash with the app container's.
*/}}
{{- define "scimgate.container" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $httpPort := ternary "scimgate" "http" .sidecar }}
{{- $adminPort := ternary "scimgate-admin" "admin" .sidecar -}}
- name: scimgate
  image: {{ include "scimgate.image" $ctx | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .native }}
  # Native sidecar (KEP-753): starts before the app containers, stops after them.
  restartPolicy: Always
  {{- end }}
  args:
    - serve
    - --config
    - {{ include "scimgate.configPath" $ctx }}
  ports:
    - name: {{ $httpPort }}
      containerPort: {{ $v.containerPorts.http }}
      protocol: TCP
    - name: {{ $adminPort }}
      containerPort: {{ $v.containerPorts.admin }}
      protocol: TCP
  {{- with $v.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $v.startupProbe.enabled }}
  # Passes once the JWKS has loaded: for a native sidecar, the app containers start only then.
  startupProbe:
    httpGet:
      path: /readyz
      port: {{ $adminPort }}
    periodSeconds: {{ $v.startupProbe.periodSeconds }}
    timeoutSeconds: {{ $v.startupProbe.timeoutSeconds }}
    failureThreshold: {{ $v.startupProbe.failureThreshold }}
  {{- end }}
  {{- if $v.livenessProbe.enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $adminPort }}
    periodSeconds: {{ $v.livenessProbe.periodSeconds }}
    timeoutSeconds: {{ $v.livenessProbe.timeoutSeconds }}
    failureThreshold: {{ $v.livenessProbe.failureThreshold }}
  {{- end }}
  {{- if $v.readinessProbe.enabled }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $adminPort }}
    periodSeconds: {{ $v.readinessProbe.periodSeconds }}
    timeoutSeconds: {{ $v.readinessProbe.timeoutSeconds }}
    failureThreshold: {{ $v.readinessProbe.failureThreshold }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.lifecycle }}
  lifecycle:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  terminationMessagePolicy: FallbackToLogsOnError
  volumeMounts:
    # A directory mount (never subPath), so ConfigMap/Secret updates reach the running process.
    - name: scimgate-config
      mountPath: /etc/scimgate
      readOnly: true
    - name: scimgate-api-keys
      mountPath: {{ $v.apiKeys.mountPath }}
      readOnly: true
    {{- if $v.tls.enabled }}
    - name: scimgate-tls
      mountPath: {{ $v.tls.mountPath }}
      readOnly: true
    {{- end }}
    {{- if $v.issuerKeys.existingSecret }}
    - name: scimgate-issuer-keys
      mountPath: {{ $v.issuerKeys.mountPath }}
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* Volumes for the container above. Key files are apiKeys.defaultMode (0440 by default: group
65532 through the pod's fsGroup, never world-readable). */}}
{{- define "scimgate.volumes" -}}
- name: scimgate-config
  configMap:
    name: {{ include "scimgate.configMapName" . }}
- name: scimgate-api-keys
  secret:
    secretName: {{ include "scimgate.secretName" . }}
    defaultMode: {{ .Values.apiKeys.defaultMode }}
{{- if .Values.tls.enabled }}
- name: scimgate-tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: {{ .Values.apiKeys.defaultMode }}
{{- end }}
{{- if .Values.issuerKeys.existingSecret }}
- name: scimgate-issuer-keys
  secret:
    secretName: {{ .Values.issuerKeys.existingSecret }}
    defaultMode: {{ .Values.apiKeys.defaultMode }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Name of the API-key Secret the sidecar mounts (for the parent's own use, e.g. the backend). */}}
{{- define "scimgate.sidecar.secretName" -}}
{{- include "scimgate.secretName" (include "scimgate.sidecar.resolve" . | fromYaml) }}
{{- end }}
