{{/*
Names, labels and the config renderer.

Every helper used by the sidecar templates reads only .Values and .Release, so it works both with
this chart's root context and with the `(dict "Values" .Values.scimgate "Release" .Release)` a parent
chart passes (the parent's .Chart is not scimgate's, hence the literal "scimgate" below).
*/}}

{{- define "scimgate.name" -}}
{{- default "scimgate" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scimgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "scimgate.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "scimgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource this chart renders. */}}
{{- define "scimgate.labels" -}}
helm.sh/chart: {{ include "scimgate.chart" . }}
{{ include "scimgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: auth-proxy
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "scimgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scimgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "scimgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scimgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "scimgate.image" -}}
{{- $tag := .Values.image.tag | default (.Chart | default dict).AppVersion | default "latest" }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (toString $tag) }}
{{- end }}
{{- end }}

{{- define "scimgate.configMapName" -}}
{{- .Values.existingConfigMap | default (printf "%s-config" (include "scimgate.fullname" .)) }}
{{- end }}

{{- define "scimgate.secretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "scimgate.fullname" .)) }}
{{- end }}

{{/* The config file's path inside the container. */}}
{{- define "scimgate.configPath" -}}
{{- if .Values.existingConfigMap }}
{{- printf "/etc/scimgate/%s" .Values.existingConfigMapKey }}
{{- else }}
{{- print "/etc/scimgate/scimgate.toml" }}
{{- end }}
{{- end }}

{{/*
The effective config as YAML: .Values.config plus what the chart owns (listen addresses, TLS file
paths, api_key_file of every account that names no key source). Parse it with fromYaml.
*/}}
{{- define "scimgate.effectiveConfig" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := get $cfg "server" | default dict }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.http)) }}
{{- if .Values.tls.enabled }}
{{- $_ := set $server "tls_cert_file" (printf "%s/tls.crt" (trimSuffix "/" .Values.tls.mountPath)) }}
{{- $_ := set $server "tls_key_file" (printf "%s/tls.key" (trimSuffix "/" .Values.tls.mountPath)) }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- $_ := set $cfg "admin" (dict "listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.admin))) }}
{{- $accounts := get $cfg "service_accounts" | default dict }}
{{- range $name, $account := $accounts }}
{{- if not (or (hasKey $account "api_key_file") (hasKey $account "api_key_env")) }}
{{- $_ := set $account "api_key_file" (printf "%s/%s" (trimSuffix "/" $.Values.apiKeys.mountPath) $name) }}
{{- end }}
{{- end }}
{{- $issuer := get $cfg "issuer" }}
{{- if and $issuer .Values.issuerKeys.existingSecret (not (hasKey $issuer "signing_key_files")) }}
{{- $files := list }}
{{- range .Values.issuerKeys.files }}
{{- $files = append $files (printf "%s/%s" (trimSuffix "/" $.Values.issuerKeys.mountPath) .) }}
{{- end }}
{{- $_ := set $issuer "signing_key_files" $files }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Install-time guards for what the schema cannot express. `helm lint` renders with neither
IsInstall nor IsUpgrade, so the chart's defaults (no rules, no accounts) still lint, while
`helm install`/`upgrade`/`template` with them fail with a message naming the missing value.
*/}}
{{- define "scimgate.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- with .Values.config.issuer }}
{{- if not (or $.Values.issuerKeys.existingSecret (hasKey . "signing_key_files")) }}
{{- fail "config.issuer needs its signing keys: set issuerKeys.existingSecret (a Secret with issuerKeys.files) or config.issuer.signing_key_files" }}
{{- end }}
{{- end }}
{{- if and (or .Release.IsInstall .Release.IsUpgrade) (not .Values.existingConfigMap) }}
{{- $accounts := .Values.config.service_accounts | default dict }}
{{- if not .Values.config.rules }}
{{- fail "config.rules is empty: add at least one rule (claim, value, service_account)" }}
{{- end }}
{{- if not $accounts }}
{{- fail "config.service_accounts is empty: add the account(s) your rules name" }}
{{- end }}
{{- range $i, $rule := .Values.config.rules }}
{{- if not (hasKey $accounts $rule.service_account) }}
{{- fail (printf "config.rules[%d].service_account: no service account %q (known: %s)" $i $rule.service_account (keys $accounts | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- if not .Values.apiKeys.existingSecret }}
{{- range $name, $account := $accounts }}
{{- if not (or (hasKey $account "api_key_file") (hasKey $account "api_key_env") (hasKey $.Values.apiKeys.keys $name)) }}
{{- fail (printf "service account %q has no API key: set apiKeys.keys.%s, apiKeys.existingSecret, or config.service_accounts.%s.api_key_env" $name $name $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
TOML rendering. Scalars go through toJson: a JSON string is a valid TOML basic string, JSON
numbers and booleans are TOML's (and toJson keeps 10485760 an integer, where printing a Helm
number would give 1.048576e+07). Nulls are skipped. Maps become [tables], lists of maps
[[arrays of tables]], lists of scalars inline arrays.
*/}}
{{- define "scimgate.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "scimgate.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}{{ if kindIs "map" (first .) }}true{{ end }}{{ end }}
{{- end }}

{{- define "scimgate.toml.hasScalars" -}}
{{- range $key, $value := . }}
{{- if not (or (kindIs "invalid" $value) (kindIs "map" $value) (include "scimgate.toml.isTableArray" $value)) }}true{{ end }}
{{- end }}
{{- end }}

{{/* (dict "path" "a.b" "table" $map): key = value lines, then sub-tables, then arrays of tables. */}}
{{- define "scimgate.toml.table" -}}
{{- $path := .path }}
{{- $table := .table }}
{{- range $key, $value := $table }}
{{- if not (or (kindIs "invalid" $value) (kindIs "map" $value) (include "scimgate.toml.isTableArray" $value)) }}
{{ include "scimgate.toml.key" $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $key, $value := $table }}
{{- if kindIs "map" $value }}
{{- $sub := ternary (include "scimgate.toml.key" $key) (printf "%s.%s" $path (include "scimgate.toml.key" $key)) (eq $path "") }}
{{- $body := include "scimgate.toml.table" (dict "path" $sub "table" $value) }}
{{- /* A table holding only sub-tables needs no header of its own. */}}
{{- if or (include "scimgate.toml.hasScalars" $value) (not $body) }}

[{{ $sub }}]
{{- end }}
{{- $body }}
{{- end }}
{{- end }}
{{- range $key, $value := $table }}
{{- if include "scimgate.toml.isTableArray" $value }}
{{- $sub := ternary (include "scimgate.toml.key" $key) (printf "%s.%s" $path (include "scimgate.toml.key" $key)) (eq $path "") }}
{{- range $value }}

[[{{ $sub }}]]
{{- include "scimgate.toml.table" (dict "path" $sub "table" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The whole file: sections in the contract's order, then anything else. */}}
{{- define "scimgate.toml" -}}
# Rendered by the scimgate Helm chart from .Values.config (docs/contract.md).
{{- $cfg := include "scimgate.effectiveConfig" . | fromYaml }}
{{- $order := list "server" "admin" "log" "runtime" "upstream" "jwt" "rules" "service_accounts" }}
{{- range $order }}
{{- if hasKey $cfg . }}
{{- include "scimgate.toml.table" (dict "path" "" "table" (dict . (get $cfg .))) }}
{{- end }}
{{- end }}
{{- include "scimgate.toml.table" (dict "path" "" "table" (omit $cfg "server" "admin" "log" "runtime" "upstream" "jwt" "rules" "service_accounts")) }}
{{ end }}

{{/*
Settings scimgate applies only at start (app.rs warn_about_restart_only_changes): a checksum of
these rolls the pods; everything else in the ConfigMap/Secret is hot-reloaded.
*/}}
{{- define "scimgate.restartChecksum" -}}
{{- $cfg := include "scimgate.effectiveConfig" . | fromYaml }}
{{- $server := $cfg.server | default dict }}
{{- $restart := dict "server" (pick $server "listen" "header_read_timeout" "max_connections" "shutdown_grace") "tls" (hasKey $server "tls_cert_file") "admin" $cfg.admin "log" ($cfg.log | default dict) "runtime" ($cfg.runtime | default dict) }}
{{- toJson $restart | sha256sum }}
{{- end }}
