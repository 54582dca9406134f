{{/*
The alert rules, as the `groups:` of a Prometheus rules file. One source for both the optional
PrometheusRule (prometheusrule.yaml) and the plain rules file shipped beside the chart
(alerts/scimgate.rules.yaml, the render of this template with the default values; CI fails when
the two differ, and runs `promtool test rules` on it). Runbook: docs/operations.md, "Alerts".

Thresholds come from .Values.metrics.prometheusRule; the JWKS thresholds from config.jwt.max_stale
(scimgate's own readiness limit), unless jwksMaxStale overrides it.
*/}}

{{/* A humantime duration ("24h", "1h 30m", "90s") in whole seconds; sub-second units count 0. */}}
{{- define "scimgate.alerts.seconds" -}}
{{- $units := dict "s" 1 "sec" 1 "secs" 1 "second" 1 "seconds" 1 "m" 60 "min" 60 "mins" 60 "minute" 60 "minutes" 60 "h" 3600 "hr" 3600 "hrs" 3600 "hour" 3600 "hours" 3600 "d" 86400 "day" 86400 "days" 86400 "w" 604800 "week" 604800 "weeks" 604800 "M" 2630016 "month" 2630016 "months" 2630016 "y" 31557600 "year" 31557600 "years" 31557600 }}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+\\s*[a-zA-Zµ]+" (toString .) -1 }}
{{- $n := regexFind "^[0-9]+" . | atoi }}
{{- $unit := regexReplaceAll "^[0-9]+\\s*" . "" }}
{{- $total = add $total (mul $n (get $units $unit | default 0)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
Adds the configured label matchers to every scimgate_* selector of a PromQL expression:
metric{a="b"} -> metric{SEL, a="b"}, a bare metric -> metric{SEL}. (list EXPR SELECTOR)
*/}}
{{- define "scimgate.alerts.select" -}}
{{- $expr := index . 0 }}
{{- $sel := index . 1 }}
{{- if $sel }}
{{- $expr = regexReplaceAll "(scimgate_[a-z_]+)\\{" $expr "${1}{@SEL@, " }}
{{- $expr = regexReplaceAll "(scimgate_[a-z_]+)([^a-z_{]|$)" $expr "${1}{@SEL@}${2}" }}
{{- $expr = replace "@SEL@" $sel $expr }}
{{- end }}
{{- $expr }}
{{- end }}

{{/* The rule groups (YAML, starting at `- name:`). */}}
{{- define "scimgate.alerts.groups" -}}
{{- $p := .Values.metrics.prometheusRule }}
{{- $sel := tpl ($p.selector | default "") . }}
{{- $maxStale := $p.jwksMaxStale | default ((.Values.config | default dict).jwt | default dict).max_stale | default "24h" }}
{{- $limit := include "scimgate.alerts.seconds" $maxStale | atoi }}
{{- if le $limit 0 }}
{{- fail (printf "metrics.prometheusRule: cannot read jwt.max_stale %q as a duration" (toString $maxStale)) }}
{{- end }}
{{- $stale := printf "%d * %s" $limit (toString $p.jwksStaleFraction) }}
{{- $age := "time() - scimgate_jwks_last_success_timestamp_seconds" }}
{{- $labels := $p.additionalRuleLabels | default dict }}
{{- $rules := list }}

{{- $rules = append $rules (dict
  "alert" "ScimgateJWKSStale"
  "expr" (printf "%s > %s\nand %s <= %d" $age $stale $age $limit)
  "for" "10m"
  "severity" "warning"
  "summary" "scimgate: the JWKS of tenant {{ $labels.tenant }} was last fetched {{ $value | humanizeDuration }} ago"
  "description" (printf "The last successful JWKS fetch of tenant {{ $labels.tenant }} on {{ $labels.instance }} was {{ $value | humanizeDuration }} ago. At %s (jwt.max_stale) scimgate refuses every token of this tenant with 503 and /readyz fails. Look at scimgate_jwks_fetches_total{result!=\"ok\"} and the IdP's JWKS endpoint." (toString $maxStale))) }}

{{- $rules = append $rules (dict
  "alert" "ScimgateNotReady"
  "expr" (printf "%s > %d\nor scimgate_jwks_last_success_timestamp_seconds == 0" $age $limit)
  "for" "5m"
  "severity" "critical"
  "summary" "scimgate: tenant {{ $labels.tenant }} has no JWKS younger than jwt.max_stale; /readyz fails"
  "description" (printf "Tenant {{ $labels.tenant }} on {{ $labels.instance }} has not loaded its JWKS, or the last load is older than %s (jwt.max_stale): /readyz answers 503 and every token for this tenant is refused with 503 (outcome jwks_unavailable). Look at scimgate_jwks_fetches_total{result!=\"ok\"} and the IdP's JWKS endpoint." (toString $maxStale))) }}

{{- $rules = append $rules (dict
  "alert" "ScimgateJWKSNoUsableKeys"
  "expr" "increase(scimgate_jwks_fetches_total{result=\"invalid\"}[15m]) > 0"
  "for" "5m"
  "severity" "warning"
  "summary" "scimgate: the JWKS the IdP serves for tenant {{ $labels.tenant }} has no usable key"
  "description" "Fetches of tenant {{ $labels.tenant }}'s JWKS on {{ $labels.instance }} return a set without one key scimgate can use (every key has an algorithm outside jwt.algorithms, is symmetric or malformed), or no JWK Set at all. scimgate keeps verifying with the last good keys until jwt.max_stale (if it never had any, ScimgateNotReady fires as well). Compare the IdP's keys with jwt.algorithms.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateDenyRateHigh"
  "expr" (printf "sum without (instance, pod, decision) (rate(scimgate_auth_decisions_total{decision=\"deny\"}[10m]))\n/ ignoring (reason) group_left\nsum without (instance, pod, decision, reason) (rate(scimgate_auth_decisions_total[10m]))\n> %s" (toString $p.denyRatio))
  "for" "15m"
  "severity" "warning"
  "summary" "scimgate: {{ $value | humanizePercentage }} of authorization decisions are denied with reason {{ $labels.reason }}"
  "description" "Over 10 minutes {{ $value | humanizePercentage }} of the requests are refused with reason {{ $labels.reason }}. A steady share of one reason is usually configuration: wrong_audience/wrong_issuer after an IdP change, no_rule/op_denied after a claim or rule change, expired for clock skew, missing_token or malformed for a client without the token. The access log's reason and iss/sub fields name the caller.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateUpstreamErrors"
  "expr" (printf "sum without (instance, pod, outcome) (rate(scimgate_requests_total{outcome=~\"upstream_unavailable|upstream_timeout\"}[5m]))\n/\nsum without (instance, pod, outcome) (rate(scimgate_requests_total{outcome=~\"forwarded|upstream_unavailable|upstream_timeout|upstream_rejected_credential|upstream_withheld\"}[5m]))\n> %s" (toString $p.upstreamErrorRatio))
  "for" "5m"
  "severity" "warning"
  "summary" "scimgate: {{ $value | humanizePercentage }} of the requests to the SCIM backend fail (502/504)"
  "description" "Of the requests scimgate sent upstream in the last 5 minutes, {{ $value | humanizePercentage }} found the backend unreachable (502) or timed out (504, upstream.timeout). Check the backend and upstream.url.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateUpstreamRejectedCredential"
  "expr" "sum without (instance, pod) (increase(scimgate_requests_total{outcome=\"upstream_rejected_credential\"}[5m])) > 0"
  "for" "0m"
  "severity" "critical"
  "summary" "scimgate: the SCIM backend rejects the service account's API key"
  "description" "The backend answered 401 to the service account's API key {{ $value | humanize }} time(s) in 5 minutes; scimgate answers those requests 502. The key was rotated or revoked on the backend: update the API-key Secret (scimgate reloads it without a restart).") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateUpstreamWithheld"
  "expr" "sum without (instance, pod) (increase(scimgate_requests_total{outcome=\"upstream_withheld\"}[5m])) > 0"
  "for" "0m"
  "severity" "critical"
  "summary" "scimgate: the SCIM backend put the service account's API key in a response"
  "description" "scimgate withheld {{ $value | humanize }} response(s) of the SCIM backend in 5 minutes and answered 502 instead: the response held the service account's API key, or could not be screened for it (over 1 MiB, or in a content-coding scimgate cannot decode). The backend echoes its credential: look at its error pages, a debug mode, or an echo of the request headers, and turn it off. The access log names the requests (outcome upstream_withheld); the warning \"upstream response withheld\" gives the status and why. If an earlier scimgate version or any other path to the backend could have passed such a response on, rotate the API key.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateConfigReloadFailed"
  "expr" "increase(scimgate_config_reloads_total{result=\"failure\"}[10m]) > 0"
  "for" "0m"
  "severity" "warning"
  "summary" "scimgate on {{ $labels.instance }} rejected a changed configuration"
  "description" "A changed config file or key file on {{ $labels.instance }} failed validation; the previous configuration is still serving. The pod's log has the problems (message \"configuration reload failed; keeping the running configuration\"). Fix the ConfigMap or Secret; the next valid version is picked up within 2 seconds.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateLogLinesDropped"
  "expr" "increase(scimgate_log_lines_dropped_total[10m]) > 0"
  "for" "0m"
  "severity" "warning"
  "summary" "scimgate on {{ $labels.instance }} dropped log lines: the audit trail has a gap"
  "description" "{{ $labels.instance }} dropped {{ $value | humanize }} log line(s), access lines included, in 10 minutes: its stdout took nothing while 8 MiB of lines waited (about half a second of traffic). Those requests have no audit line. Look at the log pipeline: the container runtime's log driver, disk pressure on the node, or a stalled shipper reading the pod's stdout. scimgate's stderr says how many were dropped.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateDeprovisionBudgetNearlyUsed"
  "expr" (printf "scimgate_deprovision_budget_used / (scimgate_deprovision_budget_limit > 0) > %s" (toString $p.deprovisionBudgetRatio))
  "for" "0m"
  "severity" "warning"
  "summary" "scimgate on {{ $labels.instance }} has used {{ $value | humanizePercentage }} of tenant {{ $labels.tenant }}'s deprovisioning budget"
  "description" "Deletes and deactivations of tenant {{ $labels.tenant }} through {{ $labels.instance }} have used {{ $value | humanizePercentage }} of guardrails.max_deprovisions in the current deprovision_window. If the identity provider is not meant to be offboarding that many users right now (a mis-scoped assignment, a broken sync rule), stop its provisioning before the budget is gone. The access lines with deprovisions > 0 name the requests.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateDeprovisioningStopped"
  "expr" "increase(scimgate_guardrail_trips_total{guardrail=\"deprovision_budget\"}[10m]) > 0"
  "for" "0m"
  "severity" "critical"
  "summary" "scimgate on {{ $labels.instance }} is refusing deletes and deactivations for tenant {{ $labels.tenant }}"
  "description" "{{ $labels.instance }} refused {{ $value | humanize }} delete(s) or deactivation(s) of tenant {{ $labels.tenant }} in 10 minutes because guardrails.max_deprovisions was reached: a mass deprovisioning was stopped at the gate and nothing of it reached the backend after the budget. Find out why the identity provider is deprovisioning (its audit log, the access lines with guardrail deprovision_budget). If it is intended, raise max_deprovisions (hot reload); if not, fix the IdP first: the refused requests will be retried by it once the window lets them through.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateGuardrailRefusals"
  "expr" "increase(scimgate_guardrail_trips_total{guardrail!=\"deprovision_budget\"}[10m]) > 0"
  "for" "0m"
  "severity" "warning"
  "summary" "scimgate on {{ $labels.instance }} refused requests of tenant {{ $labels.tenant }} by its {{ $labels.guardrail }} guardrail"
  "description" "{{ $labels.instance }} refused {{ $value | humanize }} request(s) of tenant {{ $labels.tenant }} in 10 minutes by the rule guardrail {{ $labels.guardrail }} (deny_attributes, protected_groups, source_ips or rate_limit). A connector is trying to do what its rule forbids: the access lines with that guardrail name the rule, the client and the attribute paths. Either the connector's mapping is wrong, or the rule is too narrow for it.") }}

{{- $rules = append $rules (dict
  "alert" "ScimgateConnectionsNearLimit"
  "expr" (printf "scimgate_connections_open / scimgate_connections_max > %s" (toString $p.connectionsRatio))
  "for" "5m"
  "severity" "warning"
  "summary" "scimgate on {{ $labels.instance }} uses {{ $value | humanizePercentage }} of server.max_connections"
  "description" "{{ $labels.instance }} holds {{ $value | humanizePercentage }} of its server.max_connections; at the limit new connections wait in the listen backlog. Scale out, raise server.max_connections (restart-only), or look for clients that hold idle connections.") }}

- name: scimgate
  rules:
{{- range $rules }}
{{- if not (has .alert ($p.disabledAlerts | default list)) }}
    - alert: {{ .alert }}
      expr: |-
        {{- include "scimgate.alerts.select" (list .expr $sel) | nindent 8 }}
      {{- if ne .for "0m" }}
      for: {{ .for }}
      {{- end }}
      labels:
        {{- toYaml (merge (dict "severity" .severity) $labels) | nindent 8 }}
      annotations:
        summary: {{ .summary | quote }}
        description: {{ .description | quote }}
{{- end }}
{{- end }}
{{- end }}
