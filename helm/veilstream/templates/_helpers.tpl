{{/*
Names, labels and shared blocks of the VeilStream chart.
*/}}

{{/* Chart name, overridable. */}}
{{- define "veilstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name, truncated to 63 characters (the DNS label limit of Service names).
A release name that already contains the chart name is used as is.
*/}}
{{- define "veilstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Name of one component's resources: <fullname>-<component> within 63 characters. The prefix is cut,
never the suffix, so a long release name cannot make two components' names collide.
*/}}
{{- define "veilstream.componentName" -}}
{{- $prefix := include "veilstream.fullname" .ctx | trunc (int (sub 62 (len .component))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix .component -}}
{{- end -}}

{{/* chart-version label value. */}}
{{- define "veilstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades, so never the version. */}}
{{- define "veilstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "veilstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Common labels of every resource. */}}
{{- define "veilstream.labels" -}}
helm.sh/chart: {{ include "veilstream.chart" . }}
{{ include "veilstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: veilstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: dict "ctx" $ "component" "ingest". */}}
{{- define "veilstream.componentLabels" -}}
{{ include "veilstream.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one component: dict "ctx" $ "component" "ingest". */}}
{{- define "veilstream.componentSelectorLabels" -}}
{{ include "veilstream.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "veilstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "veilstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "veilstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "veilstream.rayImage" -}}
{{- $repo := default .Values.image.repository .Values.ray.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.ray.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/*
The RayCluster's name. KubeRay derives pod names from it (<cluster>-<group>-worker-<hash>),
so it is kept short.
*/}}
{{- define "veilstream.rayClusterName" -}}
{{- printf "%s-ray" (include "veilstream.fullname" . | trunc 36 | trimSuffix "-") -}}
{{- end -}}

{{/* The head service name, set explicitly in the RayCluster so the driver's address is known. */}}
{{- define "veilstream.rayHeadServiceName" -}}
{{- printf "%s-head-svc" (include "veilstream.rayClusterName" .) -}}
{{- end -}}

{{- define "veilstream.rayAddress" -}}
{{- if eq (include "veilstream.processAsJob" .) "true" -}}
{{- include "veilstream.rayDashboardUrl" . -}}
{{- else -}}
{{- printf "ray://%s.%s.svc:%d" (include "veilstream.rayHeadServiceName" .) .Release.Namespace (int .Values.ray.clientPort) -}}
{{- end -}}
{{- end -}}

{{/* The head's Ray Jobs API (dashboard); the process submitter posts the job there. */}}
{{- define "veilstream.rayDashboardUrl" -}}
{{- printf "http://%s.%s.svc:8265" (include "veilstream.rayHeadServiceName" .) .Release.Namespace -}}
{{- end -}}

{{/*
"true" when the RayCluster asks for Ray token authentication (ray.auth.mode token, the default).
*/}}
{{- define "veilstream.rayAuthToken" -}}
{{- and .Values.ray.enabled (eq (dig "auth" "mode" "token" .Values.ray) "token") | toString -}}
{{- end -}}

{{/*
The Secret with the Ray token (key `auth_token`): ray.auth.secretName, else the one KubeRay
generates for the RayCluster, named after it (KubeRay's CheckName leaves names this short as
they are).
*/}}
{{- define "veilstream.rayAuthSecretName" -}}
{{- dig "auth" "secretName" "" .Values.ray | default (include "veilstream.rayClusterName" .) -}}
{{- end -}}

{{/*
The env of a pod that talks to the RayCluster (a Ray driver or a Jobs API client): the token from
the Secret KubeRay gives the Ray containers. Ray's own clients (JobSubmissionClient's HTTP
requests, ray.init's gRPC channels, Ray Client) send it whenever RAY_AUTH_MODE is token. With
ray.auth.mode disabled: RAY_AUTH_MODE=disabled and no token (veilstream.rayNodeAuthEnv). Empty
with ray.enabled false (Ray then runs inside the pod and sets itself up). Takes $.
*/}}
{{- define "veilstream.rayAuthEnv" -}}
{{- if eq (include "veilstream.rayAuthToken" .) "true" }}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "veilstream.rayAuthSecretName" . }}
      key: auth_token
{{- else }}
{{- include "veilstream.rayNodeAuthEnv" . }}
{{- end }}
{{- end -}}

{{/*
The Ray containers' own auth env. Token mode: none (KubeRay sets RAY_AUTH_MODE and RAY_AUTH_TOKEN,
and skips a name the template already has). Disabled: RAY_AUTH_MODE=disabled, explicitly, as the
local stack does (pipeline/devstack/raylocal.py): with the variable unset, Ray 2.59+ turns token
auth on for `ray start` whenever it finds a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token), which the drivers would then lack. Takes $.
*/}}
{{- define "veilstream.rayNodeAuthEnv" -}}
{{- if and .Values.ray.enabled (ne (include "veilstream.rayAuthToken" .) "true") }}
- name: RAY_AUTH_MODE
  value: disabled
{{- end }}
{{- end -}}

{{/* "true" when process runs as a Ray job in the cluster (production), not as Ray Client drivers. */}}
{{- define "veilstream.processAsJob" -}}
{{- and .Values.ray.enabled (not .Values.ray.legacyClient) | toString -}}
{{- end -}}

{{/* Env var names the config names for secrets; the Deployments set them from existing Secrets. */}}
{{- define "veilstream.env.s3AccessKey" -}}VEIL_S3_ACCESS_KEY{{- end -}}
{{- define "veilstream.env.s3SecretKey" -}}VEIL_S3_SECRET_KEY{{- end -}}
{{- define "veilstream.env.kafkaUsername" -}}VEIL_KAFKA_USERNAME{{- end -}}
{{- define "veilstream.env.kafkaPassword" -}}VEIL_KAFKA_PASSWORD{{- end -}}
{{- define "veilstream.kafkaCaDir" -}}/etc/veilstream/kafka-ca{{- end -}}
{{- define "veilstream.kafkaClientCertDir" -}}/etc/veilstream/kafka-client{{- end -}}
{{- define "veilstream.objectStoreCaDir" -}}/etc/veilstream/object-store-ca{{- end -}}
{{- define "veilstream.env.kafkaOAuthClientId" -}}VEIL_KAFKA_OAUTH_CLIENT_ID{{- end -}}
{{- define "veilstream.env.kafkaOAuthClientSecret" -}}VEIL_KAFKA_OAUTH_CLIENT_SECRET{{- end -}}

{{/* Ray pod image: GPU groups get the Dockerfile.gpu image (tag + image.gpuTagSuffix). dict "ctx" $ "gpu" N */}}
{{- define "veilstream.rayGroupImage" -}}
{{- $img := include "veilstream.rayImage" .ctx -}}
{{- if gt (int .gpu) 0 -}}{{- printf "%s%s" $img (.ctx.Values.image.gpuTagSuffix | default "") -}}{{- else -}}{{- $img -}}{{- end -}}
{{- end -}}

{{/*
Bytes of a Kubernetes memory quantity (plain integer or Ki/Mi/Gi/Ti/k/M/G/T suffix); 0 when it
cannot be read (validateValues reports it).
*/}}
{{- define "veilstream.bytes" -}}
{{- $q := toString . -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if regexMatch "^[0-9]+(k|M|G|T|Ki|Mi|Gi|Ti)?$" $q -}}
{{- $n := regexFind "^[0-9]+" $q | int64 -}}
{{- $u := trimPrefix (regexFind "^[0-9]+" $q) $q -}}
{{- mul $n (get $units $u) -}}
{{- else -}}0{{- end -}}
{{- end -}}

{{/* Probes of a worker container (startup budget shared with the config's metrics.startup_budget_s). */}}
{{- define "veilstream.probes" -}}
{{- $p := .Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: {{ max 1 (div (int $p.startupBudgetSeconds) 10) }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ int $p.liveness.periodSeconds }}
  timeoutSeconds: {{ int $p.liveness.timeoutSeconds }}
  failureThreshold: {{ int $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: {{ int $p.readiness.periodSeconds }}
  timeoutSeconds: {{ int $p.readiness.timeoutSeconds }}
  failureThreshold: {{ int $p.readiness.failureThreshold }}
{{- end -}}

{{/*
The pipeline config (schemas/config.schema.json) every worker mounts: `.Values.pipeline`
verbatim, plus the keys the chart owns, taken from the component blocks.
*/}}
{{- define "veilstream.config" -}}
{{- $v := .Values -}}
{{- $cfg := deepCopy ($v.pipeline | default dict) -}}
{{- $sec := $v.kafka.security -}}
{{- $security := dict "protocol" $sec.protocol "sasl_mechanism" nil "username_env" nil "password_env" nil "ca_file" nil "cert_file" nil "key_file" nil -}}
{{- if $sec.saslMechanism }}{{ $_ := set $security "sasl_mechanism" $sec.saslMechanism }}{{ end -}}
{{- if and $sec.existingSecret (ne (toString $sec.saslMechanism) "OAUTHBEARER") -}}
{{- $_ := set $security "username_env" (include "veilstream.env.kafkaUsername" .) -}}
{{- $_ := set $security "password_env" (include "veilstream.env.kafkaPassword" .) -}}
{{- end -}}
{{- if $sec.caSecret }}{{ $_ := set $security "ca_file" (printf "%s/%s" (include "veilstream.kafkaCaDir" .) $sec.caKey) }}{{ end -}}
{{- if $sec.clientCertSecret -}}
{{- $_ := set $security "cert_file" (printf "%s/%s" (include "veilstream.kafkaClientCertDir" .) $sec.clientCertKey) -}}
{{- $_ := set $security "key_file" (printf "%s/%s" (include "veilstream.kafkaClientCertDir" .) $sec.clientKeyKey) -}}
{{- end -}}
{{- if eq (toString $sec.saslMechanism) "OAUTHBEARER" -}}
{{- $o := $sec.oauth | default dict -}}
{{- $_ := set $security "oauth" (dict "token_endpoint_url" $o.tokenEndpointUrl "client_id_env" (include "veilstream.env.kafkaOAuthClientId" .) "client_secret_env" (include "veilstream.env.kafkaOAuthClientSecret" .) "scope" ($o.scope | default nil)) -}}
{{- end -}}
{{- $topics := dict "raw" $v.kafka.topics.raw "redacted" $v.kafka.topics.redacted "dlq" $v.kafka.topics.dlq "cameras" $v.kafka.topics.cameras "audit" $v.kafka.topics.audit -}}
{{- $kafka := dict "bootstrap_servers" $v.kafka.bootstrapServers "topics" $topics "security" $security -}}
{{- $_ := set $cfg "kafka" (mustMergeOverwrite (deepCopy (get $cfg "kafka" | default dict)) $kafka) -}}
{{- if eq (toString (dig "enabled" false ($v.rawSink | default dict))) "true" }}{{ $_ := set (get $cfg "kafka") "raw_retention_ms" (int64 $v.rawSink.rawTopicRetentionMs) }}{{ end -}}
{{- $os := $v.objectStore -}}
{{- $store := dict "endpoint" $os.endpoint "bucket" $os.buckets.redacted "audit_bucket" $os.buckets.audit "raw_bucket" $os.buckets.raw "access_key_env" (include "veilstream.env.s3AccessKey" .) "secret_key_env" (include "veilstream.env.s3SecretKey" .) "secure" $os.secure "region" $os.region "object_lock" $os.objectLock "credentials" (ternary "web_identity" "keys" (eq (toString (dig "workloadIdentity" "enabled" false $os)) "true")) "ca_file" (ternary (printf "%s/%s" (include "veilstream.objectStoreCaDir" .) $os.caKey) nil (not (empty $os.caSecret))) -}}
{{- $_ := set $cfg "object_store" (mustMergeOverwrite (deepCopy (get $cfg "object_store" | default dict)) $store) -}}
{{- $ray := dict "address" (ternary (include "veilstream.rayAddress" .) nil (eq (toString $v.ray.enabled) "true")) -}}
{{- if eq (include "veilstream.processAsJob" .) "true" }}{{ $_ := set $ray "consumers" (int $v.ray.consumers) }}{{ end -}}
{{- /* Lag-driven consumer count (job mode): the bounds come from ray.minConsumers / maxConsumers,
       the windows from pipeline.ray.autoscale; rendered only when a bound is set. */ -}}
{{- if and (eq (include "veilstream.processAsJob" .) "true") (or (not (kindIs "invalid" $v.ray.minConsumers)) (not (kindIs "invalid" $v.ray.maxConsumers))) -}}
{{- $auto := dict "min_consumers" (int (default $v.ray.consumers $v.ray.minConsumers)) "max_consumers" (int (default $v.ray.consumers $v.ray.maxConsumers)) -}}
{{- $_ := set $ray "autoscale" $auto -}}
{{- end -}}
{{- $_ := set $cfg "ray" (mustMergeOverwrite (deepCopy (get $cfg "ray" | default dict)) $ray) -}}
{{- $_ := set $cfg "policies_dir" (ternary "/etc/veilstream/policies" nil (not (empty $v.policies))) -}}
{{- $metrics := dict "port" (int $v.metrics.port) "enabled" true "endpoint" (ne (toString $v.metrics.enabled) "false") "startup_budget_s" (int $v.probes.startupBudgetSeconds) -}}
{{- $_ := set $cfg "metrics" (mustMergeOverwrite (deepCopy (get $cfg "metrics" | default dict)) $metrics) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
validateValues: every cross-field problem the schema cannot express (and the basic ones again, for
installs with --skip-schema-validation), collected first and reported in one failure.
*/}}
{{- define "veilstream.validateValues" -}}
{{- $v := .Values -}}
{{- $errs := list -}}
{{- range $comp := list "ingest" "process" "sink" -}}
{{- $c := get $v $comp | default dict -}}
{{- if or (not (hasKey $c "replicas")) (kindIs "invalid" $c.replicas) -}}
{{- $errs = append $errs (printf "%s.replicas: required" $comp) -}}
{{- else if lt (int $c.replicas) 0 -}}
{{- $errs = append $errs (printf "%s.replicas: must be >= 0, got %v" $comp $c.replicas) -}}
{{- end -}}
{{- end -}}
{{- if not $v.image.repository -}}
{{- $errs = append $errs "image.repository: required" -}}
{{- end -}}
{{- /* Kafka */ -}}
{{- if not $v.kafka.bootstrapServers -}}
{{- $errs = append $errs "kafka.bootstrapServers: required (host:port[,host:port])" -}}
{{- end -}}
{{- range $t := list "raw" "redacted" "dlq" "cameras" "audit" -}}
{{- if not (get ($v.kafka.topics | default dict) $t) -}}
{{- $errs = append $errs (printf "kafka.topics.%s: required" $t) -}}
{{- end -}}
{{- end -}}
{{- $sec := $v.kafka.security | default dict -}}
{{- if hasPrefix "SASL_" (toString $sec.protocol) -}}
{{- if not $sec.saslMechanism -}}
{{- $errs = append $errs (printf "kafka.security.saslMechanism: required with protocol %s" $sec.protocol) -}}
{{- end -}}
{{- if eq (toString $sec.saslMechanism) "OAUTHBEARER" -}}
{{- $o := $sec.oauth | default dict -}}
{{- if not $o.tokenEndpointUrl -}}
{{- $errs = append $errs "kafka.security.oauth.tokenEndpointUrl: required with saslMechanism OAUTHBEARER" -}}
{{- end -}}
{{- if not $o.existingSecret -}}
{{- $errs = append $errs "kafka.security.oauth.existingSecret: required with saslMechanism OAUTHBEARER (a Secret with the client id and secret)" -}}
{{- end -}}
{{- else if not $sec.existingSecret -}}
{{- $errs = append $errs (printf "kafka.security.existingSecret: required with protocol %s (a Secret with the SASL username and password)" $sec.protocol) -}}
{{- end -}}
{{- else if $sec.saslMechanism -}}
{{- $errs = append $errs (printf "kafka.security.saslMechanism: set, but protocol %v is not SASL_PLAINTEXT or SASL_SSL" $sec.protocol) -}}
{{- end -}}
{{- if and $sec.clientCertSecret (not (has (toString $sec.protocol) (list "SSL" "SASL_SSL"))) -}}
{{- $errs = append $errs (printf "kafka.security.clientCertSecret: set, but protocol %v does not use TLS (mutual TLS needs SSL or SASL_SSL)" $sec.protocol) -}}
{{- end -}}
{{- if and $sec.caSecret (not (has (toString $sec.protocol) (list "SSL" "SASL_SSL"))) -}}
{{- $errs = append $errs (printf "kafka.security.caSecret: set, but protocol %v does not use TLS" $sec.protocol) -}}
{{- end -}}
{{- /* Object store */ -}}
{{- $os := $v.objectStore | default dict -}}
{{- if not $os.endpoint -}}
{{- $errs = append $errs "objectStore.endpoint: required (host:port or http(s)://host:port)" -}}
{{- end -}}
{{- range $b := list "redacted" "audit" "raw" -}}
{{- if not (get ($os.buckets | default dict) $b) -}}
{{- $errs = append $errs (printf "objectStore.buckets.%s: required" $b) -}}
{{- end -}}
{{- end -}}
{{- if and (not $os.existingSecret) (ne (toString (dig "workloadIdentity" "enabled" false $os)) "true") -}}
{{- $errs = append $errs "objectStore.existingSecret: required (a Secret with the access and secret keys; the chart holds no secret values), or objectStore.workloadIdentity.enabled" -}}
{{- end -}}
{{- range $c := ($os.credentialsFor | default list) -}}
{{- if not (has $c (list "ingest" "process" "sink")) -}}
{{- $errs = append $errs (printf "objectStore.credentialsFor: unknown component %q (ingest, process, sink)" $c) -}}
{{- end -}}
{{- end -}}
{{- /* Ray */ -}}
{{- $gpuGroups := 0 -}}
{{- if $v.ray.enabled -}}
{{- if not $v.ray.workerGroups -}}
{{- $errs = append $errs "ray.workerGroups: at least one worker group is required when ray.enabled" -}}
{{- end -}}
{{- range $name, $g := ($v.ray.workerGroups | default dict) -}}
{{- $p := printf "ray.workerGroups.%s" $name -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$" $name) -}}
{{- $errs = append $errs (printf "%s: group name must be a DNS label of at most 32 characters" $p) -}}
{{- end -}}
{{- $g = $g | default dict -}}
{{- $ok := true -}}
{{- range $k := list "replicas" "minReplicas" "maxReplicas" -}}
{{- if or (not (hasKey $g $k)) (kindIs "invalid" (get $g $k)) -}}
{{- $errs = append $errs (printf "%s.%s: required" $p $k) -}}{{- $ok = false -}}
{{- else if lt (int (get $g $k)) 0 -}}
{{- $errs = append $errs (printf "%s.%s: must be >= 0, got %v" $p $k (get $g $k)) -}}{{- $ok = false -}}
{{- end -}}
{{- end -}}
{{- if $ok -}}
{{- if gt (int $g.minReplicas) (int $g.maxReplicas) -}}
{{- $errs = append $errs (printf "%s: minReplicas (%v) must be <= maxReplicas (%v)" $p $g.minReplicas $g.maxReplicas) -}}
{{- else if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) -}}
{{- $errs = append $errs (printf "%s.replicas: %v is outside [minReplicas %v, maxReplicas %v]" $p $g.replicas $g.minReplicas $g.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- if lt (int ($g.gpu | default 0)) 0 -}}
{{- $errs = append $errs (printf "%s.gpu: must be >= 0, got %v" $p $g.gpu) -}}
{{- else if gt (int ($g.gpu | default 0)) 0 -}}
{{- $gpuGroups = add1 $gpuGroups -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $det := dig "ray" "detector" dict ($v.pipeline | default dict) -}}
{{- $numGpus := (get $det "num_gpus") | default 0 | float64 -}}
{{- if and $v.ray.enabled (gt $numGpus 0.0) (eq $gpuGroups 0) -}}
{{- $errs = append $errs (printf "pipeline.ray.detector.num_gpus: %v GPUs per detector, but no ray.workerGroups entry has gpu > 0: the actors would never be scheduled" (get $det "num_gpus")) -}}
{{- end -}}
{{- /* Autoscaling */ -}}
{{- $as := $v.autoscaling | default dict -}}
{{- if $as.enabled -}}
{{- range $comp := list "process" "sink" -}}
{{- $a := get $as $comp | default dict -}}
{{- if $a.enabled -}}
{{- if lt (int $a.maxReplicas) 1 -}}
{{- $errs = append $errs (printf "autoscaling.%s.maxReplicas: must be >= 1, got %v" $comp $a.maxReplicas) -}}
{{- end -}}
{{- if lt (int $a.minReplicas) 0 -}}
{{- $errs = append $errs (printf "autoscaling.%s.minReplicas: must be >= 0, got %v" $comp $a.minReplicas) -}}
{{- else if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- $errs = append $errs (printf "autoscaling.%s: minReplicas (%v) must be <= maxReplicas (%v)" $comp $a.minReplicas $a.maxReplicas) -}}
{{- end -}}
{{- $thr := ternary "backlogThreshold" "lagThreshold" (eq $comp "sink") -}}
{{- if lt (int (get $a $thr)) 1 -}}
{{- $errs = append $errs (printf "autoscaling.%s.%s: must be >= 1, got %v" $comp $thr (get $a $thr)) -}}
{{- end -}}
{{- if and (eq $comp "sink") (lt (int $a.minReplicas) 1) -}}
{{- $errs = append $errs (printf "autoscaling.sink.minReplicas: must be >= 1, got %v: the sink scales on the backlog its running pods export, so zero sinks could never be woken (and open segments need a sink)" $a.minReplicas) -}}
{{- end -}}
{{- if and (eq $comp "sink") (ne (toString $v.metrics.enabled) "true") -}}
{{- $errs = append $errs "autoscaling.sink: scales on veil_sink_backlog_chunks, which needs metrics.enabled" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Metrics */ -}}
{{- if ne (toString $v.metrics.enabled) "true" -}}
{{- range $m := list "serviceMonitor" "podMonitor" "prometheusRule" "grafanaDashboard" -}}
{{- if dig $m "enabled" false $v.metrics -}}
{{- $errs = append $errs (printf "metrics.%s.enabled: needs metrics.enabled (there is no /metrics to read)" $m) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if lt (int $v.probes.startupBudgetSeconds) 10 -}}
{{- $errs = append $errs (printf "probes.startupBudgetSeconds: must be >= 10, got %v" $v.probes.startupBudgetSeconds) -}}
{{- end -}}
{{- /* Ray sizing */ -}}
{{- if $v.ray.enabled -}}
{{- $frac := $v.ray.objectStoreFraction | float64 -}}
{{- if or (le $frac 0.0) (gt $frac 0.8) -}}
{{- $errs = append $errs (printf "ray.objectStoreFraction: must be in (0, 0.8], got %v" $v.ray.objectStoreFraction) -}}
{{- end -}}
{{- $pods := dict "ray.head" $v.ray.head -}}
{{- range $name, $g := ($v.ray.workerGroups | default dict) -}}{{- $_ := set $pods (printf "ray.workerGroups.%s" $name) ($g | default dict) -}}{{- end -}}
{{- range $where, $g := $pods -}}
{{- $mem := dig "resources" "limits" "memory" "" $g -}}
{{- if eq (include "veilstream.bytes" $mem) "0" -}}
{{- $errs = append $errs (printf "%s.resources.limits.memory: %q must be an integer with an optional k/M/G/T/Ki/Mi/Gi/Ti suffix (the object store and /dev/shm are sized from it)" $where (toString $mem)) -}}
{{- end -}}
{{- end -}}
{{- $ft := $v.ray.gcsFaultTolerance | default dict -}}
{{- if and $ft.enabled (not $ft.redisAddress) -}}
{{- $errs = append $errs "ray.gcsFaultTolerance.redisAddress: required when ray.gcsFaultTolerance.enabled" -}}
{{- end -}}
{{- $authMode := dig "auth" "mode" "token" ($v.ray | default dict) -}}
{{- if not (has $authMode (list "token" "disabled")) -}}
{{- $errs = append $errs (printf "ray.auth.mode: must be token or disabled, got %v" $authMode) -}}
{{- else if and (eq $authMode "token") (not (semverCompare ">=2.52.0-0" (toString $v.ray.rayVersion))) -}}
{{- $errs = append $errs (printf "ray.auth.mode: token needs Ray >= 2.52 (ray.rayVersion %v); use an image with a newer Ray or set disabled" $v.ray.rayVersion) -}}
{{- end -}}
{{- end -}}
{{- /* Keys of `pipeline` the chart owns */ -}}
{{- $p := $v.pipeline | default dict -}}
{{- $owned := dict
      "kafka" (dict "bootstrap_servers" "kafka.bootstrapServers" "topics" "kafka.topics" "security" "kafka.security")
      "object_store" (dict "endpoint" "objectStore.endpoint" "bucket" "objectStore.buckets.redacted" "audit_bucket" "objectStore.buckets.audit" "raw_bucket" "objectStore.buckets.raw" "access_key_env" "objectStore.existingSecret" "secret_key_env" "objectStore.existingSecret" "secure" "objectStore.secure" "region" "objectStore.region" "object_lock" "objectStore.objectLock" "ca_file" "objectStore.caSecret" "credentials" "objectStore.workloadIdentity")
      "ray" (dict "address" "ray.enabled / ray.legacyClient" "consumers" "ray.consumers")
      "metrics" (dict "port" "metrics.port" "enabled" "metrics.enabled (probes always on)" "endpoint" "metrics.enabled" "startup_budget_s" "probes.startupBudgetSeconds") -}}
{{- range $k, $from := dict "min_consumers" "ray.minConsumers" "max_consumers" "ray.maxConsumers" -}}
{{- if hasKey (dig "ray" "autoscale" dict $p) $k -}}
{{- $errs = append $errs (printf "pipeline.ray.autoscale.%s: set by the chart from %s; remove it from pipeline" $k $from) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $p "policies_dir" -}}
{{- $errs = append $errs "pipeline.policies_dir: set by the chart (policies are mounted at /etc/veilstream/policies); remove it from pipeline" -}}
{{- end -}}
{{- range $section, $keys := $owned -}}
{{- $s := get $p $section -}}
{{- if kindIs "map" $s -}}
{{- range $k, $from := $keys -}}
{{- if hasKey $s $k -}}
{{- $errs = append $errs (printf "pipeline.%s.%s: set by the chart from %s; remove it from pipeline" $section $k $from) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Policies */ -}}
{{- $pol := $v.policies | default dict -}}
{{- range $name, $doc := $pol -}}
{{- if ne (toString (get ($doc | default dict) "policy_id")) $name -}}
{{- $errs = append $errs (printf "policies.%s.policy_id: must equal its key %q, got %q" $name $name (toString (get ($doc | default dict) "policy_id"))) -}}
{{- end -}}
{{- end -}}
{{- $pid := dig "process" "policy_id" "default" $p -}}
{{- if and $pol (not (hasKey $pol $pid)) -}}
{{- $errs = append $errs (printf "pipeline.process.policy_id: %q is not a key of policies (%s)" $pid (keys $pol | sortAlpha | join ", ")) -}}
{{- end -}}
{{- /* ray.placement node_local (the default): each detector and its share of the chunk actors are one
       STRICT_PACK placement group, so one worker pod must hold a whole group */ -}}
{{- $rc := (get ($v.pipeline | default dict) "ray") | default dict -}}
{{- if and (eq (include "veilstream.processAsJob" .) "true") (ne (toString (get $rc "placement" | default "node_local")) "spread") $v.ray.workerGroups (or (eq $numGpus 0.0) (gt $gpuGroups 0)) -}}
{{- $reps := (get $det "replicas") | default 1 | int -}}
{{- $perGroup := div (add (int ((get $rc "chunk_workers") | default 2)) (sub $reps 1)) $reps -}}
{{- $wcpu := (get $rc "worker_num_cpus") | default 0.5 | float64 -}}
{{- if and (hasKey $rc "worker_num_cpus") (eq (toString (get $rc "worker_num_cpus")) "0") }}{{ $wcpu = 0.0 }}{{ end -}}
{{- $dcpu := (get $det "num_cpus") | default 1 | float64 -}}
{{- if and (hasKey $det "num_cpus") (eq (toString (get $det "num_cpus")) "0") }}{{ $dcpu = 0.0 }}{{ end -}}
{{- $needCpu := addf $dcpu (mulf (float64 $perGroup) $wcpu) -}}
{{- $fits := false -}}
{{- $offers := list -}}
{{- range $name, $g := $v.ray.workerGroups -}}
{{- $g = $g | default dict -}}
{{- $q := toString (dig "rayStartParams" "num-cpus" (dig "resources" "limits" "cpu" (dig "resources" "requests" "cpu" "0" $g) $g) $g) -}}
{{- $cpu := ternary (divf (trimSuffix "m" $q | float64) 1000.0) ($q | float64) (hasSuffix "m" $q) -}}
{{- if and (ge $cpu $needCpu) (ge (float64 (int ($g.gpu | default 0))) $numGpus) }}{{ $fits = true }}{{ end -}}
{{- $offers = append $offers (printf "%s %v CPUs / %v GPUs" $name $cpu (int ($g.gpu | default 0))) -}}
{{- end -}}
{{- if not $fits -}}
{{- $errs = append $errs (printf "pipeline.ray.placement: node_local packs each detector (%v CPUs, %v GPUs) and its %d chunk actors (%v CPUs each) onto one pod: %v CPUs and %v GPUs, but no worker group's pod offers that (%s); size a group for it, lower chunk_workers per detector replica, or set pipeline.ray.placement: spread" $dcpu $numGpus $perGroup $wcpu $needCpu $numGpus (join ", " $offers)) -}}
{{- end -}}
{{- end -}}
{{- /* TensorRT only where the image has it (Dockerfile.gpu --build-arg TENSORRT=...) */ -}}
{{- if and (has "TensorrtExecutionProvider" ((get $det "providers") | default list)) (ne (toString (dig "tensorrt" false ($v.image | default dict))) "true") -}}
{{- $errs = append $errs "pipeline.ray.detector.providers: TensorrtExecutionProvider is required, but image.tensorrt is false: the GPU image is built without TensorRT unless Dockerfile.gpu gets --build-arg TENSORRT=...; build it so and set image.tensorrt: true, or use CUDAExecutionProvider" -}}
{{- end -}}
{{- /* Every consumer actor starts its own detectors: GPUs = consumers x replicas x num_gpus, for the
       most consumers the job may scale to (ray.maxConsumers, else ray.consumers) */ -}}
{{- $maxConsumers := int (default $v.ray.consumers $v.ray.maxConsumers) -}}
{{- $consumersKey := ternary "ray.consumers" "ray.maxConsumers" (kindIs "invalid" $v.ray.maxConsumers) -}}
{{- if and (eq (include "veilstream.processAsJob" .) "true") (gt $numGpus 0.0) (gt $gpuGroups 0) -}}
{{- $gpuMax := 0 -}}
{{- range $_, $g := ($v.ray.workerGroups | default dict) -}}
{{- $g = $g | default dict -}}
{{- $gpuMax = add $gpuMax (mul (int ($g.maxReplicas | default 0)) (int ($g.gpu | default 0))) -}}
{{- end -}}
{{- $want := mulf (mulf (int $maxConsumers | float64) ((get $det "replicas") | default 1 | float64)) $numGpus -}}
{{- if gt $want (float64 $gpuMax) -}}
{{- $errs = append $errs (printf "pipeline.ray.detector: %s (%v) x replicas (%v) x num_gpus (%v) = %v GPUs, but the worker groups have at most %v (maxReplicas x gpu): every consumer actor starts its own detectors, so some would never be scheduled" $consumersKey $maxConsumers ((get $det "replicas") | default 1) (get $det "num_gpus") $want $gpuMax) -}}
{{- end -}}
{{- end -}}
{{- /* ... and their CPUs: consumers x (0.25 for the consumer actor + replicas x detector CPUs +
       chunk_workers x worker_num_cpus) within the worker groups' maxReplicas x CPUs per pod (not
       checked while a group's own bounds are wrong: that message says it already) */ -}}
{{- $groupErrs := false -}}
{{- range $errs }}{{ if hasPrefix "ray.workerGroups." . }}{{ $groupErrs = true }}{{ end }}{{ end -}}
{{- if and (eq (include "veilstream.processAsJob" .) "true") $v.ray.workerGroups (not $groupErrs) -}}
{{- $cpuMax := 0.0 -}}
{{- range $_, $g := $v.ray.workerGroups -}}
{{- $g = $g | default dict -}}
{{- $q := toString (dig "rayStartParams" "num-cpus" (dig "resources" "limits" "cpu" (dig "resources" "requests" "cpu" "0" $g) $g) $g) -}}
{{- $cpu := ternary (divf (trimSuffix "m" $q | float64) 1000.0) ($q | float64) (hasSuffix "m" $q) -}}
{{- $cpuMax = addf $cpuMax (mulf $cpu (int ($g.maxReplicas | default 0) | float64)) -}}
{{- end -}}
{{- $wc := (get $rc "worker_num_cpus") | default 0.5 | float64 -}}
{{- if and (hasKey $rc "worker_num_cpus") (eq (toString (get $rc "worker_num_cpus")) "0") }}{{ $wc = 0.0 }}{{ end -}}
{{- $dc := (get $det "num_cpus") | default 1 | float64 -}}
{{- if and (hasKey $det "num_cpus") (eq (toString (get $det "num_cpus")) "0") }}{{ $dc = 0.0 }}{{ end -}}
{{- $per := addf 0.25 (mulf ((get $det "replicas") | default 1 | float64) $dc) (mulf ((get $rc "chunk_workers") | default 2 | float64) $wc) -}}
{{- $needCpus := mulf (int $maxConsumers | float64) $per -}}
{{- if gt $needCpus $cpuMax -}}
{{- $errs = append $errs (printf "ray.workerGroups: %s (%v) x %v CPUs each (consumer actor 0.25 + detectors + chunk actors) = %v CPUs, but the worker groups offer at most %v (maxReplicas x Ray CPUs per pod): some consumers' actors would never be scheduled; raise maxReplicas or lower %s" $consumersKey $maxConsumers $per $needCpus $cpuMax $consumersKey) -}}
{{- end -}}
{{- end -}}
{{- /* ray.minConsumers <= ray.consumers <= ray.maxConsumers */ -}}
{{- if eq (include "veilstream.processAsJob" .) "true" -}}
{{- $lo := int (default $v.ray.consumers $v.ray.minConsumers) -}}
{{- if or (lt (int $v.ray.consumers) $lo) (gt (int $v.ray.consumers) (int $maxConsumers)) -}}
{{- $errs = append $errs (printf "ray.consumers: %v starts the job and must lie within [ray.minConsumers %v, ray.maxConsumers %v]" $v.ray.consumers $lo $maxConsumers) -}}
{{- end -}}
{{- end -}}
{{- if $errs -}}
{{- fail (printf "\n\nVALUES VALIDATION (%d problem%s):\n  - %s" (len $errs) (ternary "" "s" (eq (len $errs) 1)) (join "\n  - " $errs)) -}}
{{- end -}}
{{- end -}}

{{/*
Pod template of the ingest, process and sink workers.
dict "ctx" $ "component" "ingest" "values" .Values.ingest
*/}}
{{- define "veilstream.workerPodTemplate" -}}
{{- $ := .ctx -}}
{{- $c := .values -}}
{{- $component := .component -}}
{{- $sec := $.Values.kafka.security -}}
metadata:
  labels:
    {{- include "veilstream.componentLabels" (dict "ctx" $ "component" $component) | nindent 4 }}
  annotations:
    checksum/config: {{ include "veilstream.config" $ | sha256sum }}
    checksum/policies: {{ toJson $.Values.policies | sha256sum }}
    {{- with $c.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "veilstream.serviceAccountName" $ }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ int $c.terminationGracePeriodSeconds }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ $component }}
      image: {{ include "veilstream.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      command: ["veilstream"]
      {{- if and (eq $component "process") (eq (include "veilstream.processAsJob" $) "true") }}
      {{- /* --job-revision: the pod template's hash, so a rolling upgrade's new pod submits its own
             job beside the old pod's (surge-first) instead of attaching to it */}}
      args: ["process", "--config", "/etc/veilstream/config.yaml", "--submit", {{ include "veilstream.rayDashboardUrl" $ | quote }}, "--job-name", {{ include "veilstream.componentName" (dict "ctx" $ "component" "process") | quote }}, "--job-revision", "$(VEILSTREAM_JOB_REVISION)"]
      {{- else }}
      args: [{{ $component | quote }}, "--config", "/etc/veilstream/config.yaml"]
      {{- end }}
      env:
        - name: VEILSTREAM_CONFIG
          value: /etc/veilstream/config.yaml
        - name: HOME
          value: /tmp
        {{- if and (eq $component "process") (eq (include "veilstream.processAsJob" $) "true") }}
        - name: VEILSTREAM_JOB_REVISION
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['pod-template-hash']
        {{- end }}
        {{- $os := $.Values.objectStore }}
        {{- if and (has $component ($os.credentialsFor | default list)) (ne (toString (dig "workloadIdentity" "enabled" false $os)) "true") }}
        - name: {{ include "veilstream.env.s3AccessKey" $ }}
          valueFrom:
            secretKeyRef:
              name: {{ $.Values.objectStore.existingSecret }}
              key: {{ $.Values.objectStore.accessKeyKey }}
        - name: {{ include "veilstream.env.s3SecretKey" $ }}
          valueFrom:
            secretKeyRef:
              name: {{ $.Values.objectStore.existingSecret }}
              key: {{ $.Values.objectStore.secretKeyKey }}
        {{- end }}
        {{- include "veilstream.kafkaEnv" (dict "ctx" $ "component" $component) | nindent 8 }}
        {{- if eq $component "process" }}
        {{- include "veilstream.rayAuthEnv" $ | nindent 8 }}
        {{- end }}
        {{- with $c.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ int $.Values.metrics.port }}
          protocol: TCP
      {{- include "veilstream.probes" $ | nindent 6 }}
      resources:
        {{- toYaml $c.resources | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/veilstream/config.yaml
          subPath: config.yaml
          readOnly: true
        - name: policies
          mountPath: /etc/veilstream/policies
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- include "veilstream.kafkaVolumeMounts" (dict "ctx" $ "component" $component) | nindent 8 }}
        {{- if and $os.caSecret (has $component ($os.credentialsFor | default list)) }}
        - name: object-store-ca
          mountPath: {{ include "veilstream.objectStoreCaDir" $ }}
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "veilstream.componentName" (dict "ctx" $ "component" "config") }}
    - name: policies
      configMap:
        name: {{ include "veilstream.componentName" (dict "ctx" $ "component" "policies") }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $.Values.tmpSizeLimit }}
    {{- include "veilstream.kafkaVolumes" (dict "ctx" $ "component" $component) | nindent 4 }}
    {{- if and $os.caSecret (has $component ($os.credentialsFor | default list)) }}
    - name: object-store-ca
      secret:
        secretName: {{ $os.caSecret }}
        items:
          - key: {{ $os.caKey }}
            path: {{ $os.caKey }}
    {{- end }}
  {{- with $c.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $c.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* A worker Deployment: dict "ctx" $ "component" "ingest" "values" .Values.ingest "autoscaled" bool */}}
{{- define "veilstream.workerDeployment" -}}
{{- $ := .ctx -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "veilstream.componentName" (dict "ctx" $ "component" .component) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "veilstream.componentLabels" (dict "ctx" $ "component" .component) | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ int .values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "veilstream.componentSelectorLabels" (dict "ctx" $ "component" .component) | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if and (eq .component "process") (eq (include "veilstream.processAsJob" $) "true") }}
      {{- /* Surge first: the new submitter's job runs beside the old one and the pod is ready only
             once its consumers consume; then the old pod stops its job (drain, commit). */}}
      maxUnavailable: 0
      {{- else }}
      maxUnavailable: 1
      {{- end }}
      maxSurge: 1
  template:
    {{- include "veilstream.workerPodTemplate" . | nindent 4 }}
{{- end -}}

{{/* Metrics Service of one worker component: dict "ctx" $ "component" "ingest" */}}
{{- define "veilstream.metricsService" -}}
{{- $ := .ctx -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "veilstream.componentName" (dict "ctx" $ "component" (printf "%s-metrics" .component)) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "veilstream.componentLabels" (dict "ctx" $ "component" .component) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "veilstream.componentSelectorLabels" (dict "ctx" $ "component" .component) | nindent 4 }}
  ports:
    - name: metrics
      port: {{ int $.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
{{- end -}}

{{/* PodDisruptionBudget of one worker component: dict "ctx" $ "component" "ingest" "values" .Values.ingest */}}
{{- define "veilstream.workerPdb" -}}
{{- $ := .ctx -}}
{{- if .values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "veilstream.componentName" (dict "ctx" $ "component" .component) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "veilstream.componentLabels" (dict "ctx" $ "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "veilstream.componentSelectorLabels" (dict "ctx" $ "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
KEDA ScaledObject on Kafka consumer lag: dict "ctx" $ "component" "sink" "topic" "..." "group" "..."
*/}}
{{- define "veilstream.scaledObject" -}}
{{- $ := .ctx -}}
{{- $a := get $.Values.autoscaling .component -}}
{{- $sec := $.Values.kafka.security -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "veilstream.componentName" (dict "ctx" $ "component" .component) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "veilstream.componentLabels" (dict "ctx" $ "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "veilstream.componentName" (dict "ctx" $ "component" .component) }}
  pollingInterval: {{ int $.Values.autoscaling.pollingInterval }}
  cooldownPeriod: {{ int $.Values.autoscaling.cooldownPeriod }}
  minReplicaCount: {{ int $a.minReplicas }}
  maxReplicaCount: {{ int $a.maxReplicas }}
  triggers:
    {{- if eq .component "sink" }}
    {{- /* Work not yet durable, as the sinks count it: unread chunks plus closed segments whose
           upload has not succeeded. Not the committed-offset lag: the sink commits when a segment
           is stored, so that lag stays near cameras x chunks per segment even when it keeps up. */}}
    - type: prometheus
      metadata:
        serverAddress: {{ $.Values.autoscaling.prometheus.serverAddress | quote }}
        query: {{ printf "sum(veil_sink_backlog_chunks{namespace=%q,state!=\"open\",service=%q})" $.Release.Namespace (include "veilstream.componentName" (dict "ctx" $ "component" "sink-metrics")) | quote }}
        threshold: {{ int $a.backlogThreshold | toString | quote }}
    {{- else }}
    - type: kafka
      metadata:
        bootstrapServers: {{ $.Values.kafka.bootstrapServers | quote }}
        consumerGroup: {{ .group | quote }}
        topic: {{ .topic | quote }}
        lagThreshold: {{ int $a.lagThreshold | toString | quote }}
        offsetResetPolicy: earliest
      {{- if or $sec.existingSecret $sec.caSecret $sec.clientCertSecret (has (toString $sec.protocol) (list "SSL" "SASL_SSL")) }}
      authenticationRef:
        name: {{ include "veilstream.componentName" (dict "ctx" $ "component" "kafka") }}
      {{- end }}
    {{- end }}
{{- end -}}

{{/*
Ray pod sizing (head and worker groups). The object store gets `ray.objectStoreFraction` of the
memory limit and lives in /dev/shm, a memory emptyDir sized to the memory limit (as KubeRay
does when it adds /dev/shm itself), so Ray never falls back to /tmp for it. Spilled objects go
to /ray-spill, an emptyDir of `spillSizeGi`; /tmp (session dir, logs) gets `tmpSizeGi`; the
ephemeral-storage request and limit are their sum plus 1 GiB, so the kubelet's accounting
matches what the volumes may hold and never evicts a pod that stays within them.
*/}}
{{- define "veilstream.rayStartSizing" -}}
{{- $mem := include "veilstream.bytes" (dig "resources" "limits" "memory" "" .group) | int64 -}}
{{- $frac := .ctx.Values.ray.objectStoreFraction | float64 -}}
{{- $store := mulf $mem $frac | floor | int64 -}}
{{- if and (gt $store 0) (not (hasKey .params "object-store-memory")) -}}
{{- $_ := set .params "object-store-memory" (toString $store) -}}
{{- end -}}
{{- if not (hasKey .params "object-spilling-directory") -}}
{{- $_ := set .params "object-spilling-directory" "/ray-spill" -}}
{{- end -}}
{{- end -}}

{{- define "veilstream.rayResources" -}}
{{- $g := .group -}}
{{- $res := deepCopy ($g.resources | default dict) -}}
{{- $eph := printf "%dGi" (add (int ($g.tmpSizeGi | default 2)) (int ($g.spillSizeGi | default 4)) 1) -}}
{{- $_ := set $res "requests" (merge (dict "ephemeral-storage" $eph) (get $res "requests" | default dict)) -}}
{{- $_ := set $res "limits" (merge (dict "ephemeral-storage" $eph) (get $res "limits" | default dict)) -}}
{{- if gt (int .gpu) 0 -}}
{{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int .gpu)) (get $res "limits")) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{- define "veilstream.rayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
- name: spill
  mountPath: /ray-spill
{{- with .volumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "veilstream.rayVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ printf "%dGi" (int (.tmpSizeGi | default 2)) }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ dig "resources" "limits" "memory" "1Gi" . }}
- name: spill
  emptyDir:
    sizeLimit: {{ printf "%dGi" (int (.spillSizeGi | default 4)) }}
{{- with .volumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* nodeSelector, tolerations, affinity, topology spread and priority class of a Ray pod. */}}
{{- define "veilstream.rayScheduling" -}}
{{- $g := .group -}}
{{- with $g.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/*
The Kafka identity of one component: kafka.security, with kafka.security.users.<component>
(existingSecret, username, usernameKey, passwordKey, clientCertSecret) overriding it, so each
stage can hold its own least-privilege user (k8s/strimzi/kafkausers.yaml). dict "ctx" $ "component" "sink"
*/}}
{{- define "veilstream.kafkaSecurityFor" -}}
{{- $sec := .ctx.Values.kafka.security -}}
{{- $own := get ($sec.users | default dict) .component | default dict -}}
{{- toYaml (merge (deepCopy $own) (omit $sec "users")) -}}
{{- end -}}

{{/* Kafka credential env vars (SASL password / username, OAUTHBEARER client) from existing Secrets. */}}
{{- define "veilstream.kafkaEnv" -}}
{{- $ := .ctx -}}
{{- $sec := include "veilstream.kafkaSecurityFor" . | fromYaml -}}
{{- if and $sec.existingSecret (ne (toString $sec.saslMechanism) "OAUTHBEARER") }}
- name: {{ include "veilstream.env.kafkaUsername" $ }}
  {{- if $sec.username }}
  value: {{ $sec.username | quote }}
  {{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ $sec.existingSecret }}
      key: {{ $sec.usernameKey }}
  {{- end }}
- name: {{ include "veilstream.env.kafkaPassword" $ }}
  valueFrom:
    secretKeyRef:
      name: {{ $sec.existingSecret }}
      key: {{ $sec.passwordKey }}
{{- end }}
{{- if eq (toString $sec.saslMechanism) "OAUTHBEARER" }}
- name: {{ include "veilstream.env.kafkaOAuthClientId" $ }}
  valueFrom:
    secretKeyRef:
      name: {{ $sec.oauth.existingSecret }}
      key: {{ $sec.oauth.clientIdKey }}
- name: {{ include "veilstream.env.kafkaOAuthClientSecret" $ }}
  valueFrom:
    secretKeyRef:
      name: {{ $sec.oauth.existingSecret }}
      key: {{ $sec.oauth.clientSecretKey }}
{{- end }}
{{- end -}}

{{/*
What the process stage's consumer actors need in every Ray container when process runs as a Ray
job (ray.legacyClient false): the process identity's Kafka credentials (kafkaEnv with component
"process"), the image's offline/model settings and process.extraEnv. Empty otherwise. Takes $.
*/}}
{{- define "veilstream.rayProcessEnv" -}}
{{- if eq (include "veilstream.processAsJob" .) "true" }}
{{- include "veilstream.kafkaEnv" (dict "ctx" . "component" "process") }}
- name: VEILSTREAM_OFFLINE
  value: "1"
- name: VEILSTREAM_MODEL_DIR
  value: {{ (.Values.pipeline.process | default dict).model_dir | default "/opt/veilstream/models" | quote }}
{{- with .Values.process.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The process identity's Kafka CA / client certificate mounts of a Ray container in job mode. Takes $. */}}
{{- define "veilstream.rayProcessVolumeMounts" -}}
{{- if eq (include "veilstream.processAsJob" .) "true" }}
{{- include "veilstream.kafkaVolumeMounts" (dict "ctx" . "component" "process") }}
{{- end }}
{{- end -}}

{{/* The volumes those mounts name. Takes $. */}}
{{- define "veilstream.rayProcessVolumes" -}}
{{- if eq (include "veilstream.processAsJob" .) "true" }}
{{- include "veilstream.kafkaVolumes" (dict "ctx" . "component" "process") }}
{{- end }}
{{- end -}}

{{/* Mounts of the Kafka CA and client certificate Secrets. */}}
{{- define "veilstream.kafkaVolumeMounts" -}}
{{- $ := .ctx -}}
{{- $sec := include "veilstream.kafkaSecurityFor" . | fromYaml -}}
{{- if $sec.caSecret }}
- name: kafka-ca
  mountPath: {{ include "veilstream.kafkaCaDir" $ }}
  readOnly: true
{{- end }}
{{- if $sec.clientCertSecret }}
- name: kafka-client
  mountPath: {{ include "veilstream.kafkaClientCertDir" $ }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes of the Kafka CA and client certificate Secrets. */}}
{{- define "veilstream.kafkaVolumes" -}}
{{- $ := .ctx -}}
{{- $sec := include "veilstream.kafkaSecurityFor" . | fromYaml -}}
{{- if $sec.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $sec.caSecret }}
    items:
      - key: {{ $sec.caKey }}
        path: {{ $sec.caKey }}
{{- end }}
{{- if $sec.clientCertSecret }}
- name: kafka-client
  secret:
    secretName: {{ $sec.clientCertSecret }}
    defaultMode: 0400
    items:
      - key: {{ $sec.clientCertKey }}
        path: {{ $sec.clientCertKey }}
      - key: {{ $sec.clientKeyKey }}
        path: {{ $sec.clientKeyKey }}
{{- end }}
{{- end -}}

{{/*
Every priorityClassName the release's pods name (ingest, process, sink, rawSink, console, the Ray
head and worker groups), sorted and unique, without Kubernetes' own system-* classes: a JSON array.
*/}}
{{- define "veilstream.priorityClassNames" -}}
{{- $v := .Values -}}
{{- $names := list -}}
{{- range $c := list $v.ingest $v.process $v.sink $v.rawSink $v.console -}}
{{- with (($c | default dict).priorityClassName) }}{{ $names = append $names . }}{{ end -}}
{{- end -}}
{{- if $v.ray.enabled -}}
{{- with (($v.ray.head | default dict).priorityClassName) }}{{ $names = append $names . }}{{ end -}}
{{- range $_, $g := ($v.ray.workerGroups | default dict) -}}
{{- with (($g | default dict).priorityClassName) }}{{ $names = append $names . }}{{ end -}}
{{- end -}}
{{- end -}}
{{- $out := list -}}
{{- range $n := ($names | uniq | sortAlpha) -}}
{{- if not (hasPrefix "system-" $n) }}{{ $out = append $out $n }}{{ end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
