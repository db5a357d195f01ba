{{/* Named templates of the herd chart. */}}

{{/* Chart name, at most 63 characters. */}}
{{- define "herd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>` unless the release name already holds the chart name. */}}
{{- define "herd.fullname" -}}
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

{{/* Labels every object carries. */}}
{{- define "herd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "herd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
herd.dev/run: {{ .Values.run.id | quote }}
{{- end -}}

{{/* Labels that select the release's pods. */}}
{{- define "herd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels that select one role's pods; argument: dict root, component and, for a
generation worker, generator (its name). */}}
{{- define "herd.componentSelectorLabels" -}}
{{ include "herd.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .generator }}
herd.dev/generator: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Labels of a role's objects: the release's labels and the role's. Argument: as
herd.componentSelectorLabels. */}}
{{- define "herd.componentLabels" -}}
{{ include "herd.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .generator }}
herd.dev/generator: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Labels of a role's pods: its selector labels and the run. Argument: as
herd.componentSelectorLabels. */}}
{{- define "herd.podLabels" -}}
{{ include "herd.componentSelectorLabels" . }}
herd.dev/run: {{ .root.Values.run.id | quote }}
{{- end -}}

{{/* ServiceAccount name. */}}
{{- define "herd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "herd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Object names of the roles. A generator's Deployment is named after the generator with
its dots (llama-3.1-8b) made '-', so the name stays a DNS label; argument: dict root and
name. The coordinator's Job is one per run id. */}}
{{- define "herd.generatorWorkerName" -}}
{{- printf "%s-gen-%s" (include "herd.fullname" .root) (replace "." "-" .name) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "herd.judgeWorkerName" -}}
{{- printf "%s-judge" (include "herd.fullname" .) -}}
{{- end -}}
{{- define "herd.coordinatorName" -}}
{{- printf "%s-coordinator" (include "herd.fullname" .) -}}
{{- end -}}
{{- define "herd.coordinatorJobName" -}}
{{- printf "%s-%s" (include "herd.coordinatorName" .) .Values.run.id | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Image reference; argument: dict "image" (cpu or cuda values) and "root". */}}
{{- define "herd.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Names of the Secrets. */}}
{{- define "herd.amqpSecretName" -}}
{{- default (printf "%s-amqp" (include "herd.fullname" .)) .Values.amqp.existingSecret -}}
{{- end -}}
{{- define "herd.storageSecretName" -}}
{{- default (printf "%s-storage" (include "herd.fullname" .)) .Values.storage.existingSecret -}}
{{- end -}}
{{/* Whether any S3 key pair is configured (existing Secret or values). */}}
{{- define "herd.storageHasKeys" -}}
{{- if or .Values.storage.existingSecret .Values.storage.accessKeyId -}}true{{- end -}}
{{- end -}}

{{/* Pod annotations that roll a Deployment's pods when the Secrets the chart creates change
(a password read at start-up, or a URL in the environment, would otherwise go stale). */}}
{{- define "herd.checksumAnnotations" -}}
{{- with include (print .Template.BasePath "/secrets.yaml") . | trim -}}
checksum/secrets: {{ sha256sum . }}
{{- end -}}
{{- end -}}

{{/* AMQP URL without password (what HERD_AMQP_URL holds in file mode). */}}
{{- define "herd.amqpUrl" -}}
{{- $broker := .Values.amqp.inCluster -}}
{{- if $broker.enabled -}}
{{- printf "amqp://%s@%s.%s.svc:%d/%s" $broker.username $broker.serviceName (default .Release.Namespace $broker.namespace) ($broker.port | int) $broker.vhost -}}
{{- else -}}
{{- .Values.amqp.url -}}
{{- end -}}
{{- end -}}

{{/* Management API URL without credentials (KEDA). */}}
{{- define "herd.amqpManagementUrl" -}}
{{- $broker := .Values.amqp.inCluster -}}
{{- if $broker.enabled -}}
{{- printf "http://%s.%s.svc:%d/%s" $broker.serviceName (default .Release.Namespace $broker.namespace) ($broker.managementPort | int) $broker.vhost -}}
{{- else -}}
{{- .Values.amqp.managementUrl -}}
{{- end -}}
{{- end -}}

{{/* A URL with `user:password@` put in place of any user info; argument: dict url, root. */}}
{{- define "herd.withCredentials" -}}
{{- /* urlquery is Go's QueryEscape: a space becomes "+", which user info would keep as a
plus; a literal "+" is escaped to %2B, so every "+" left was a space. */ -}}
{{- $user := urlquery .root.Values.amqp.username | replace "+" "%20" -}}
{{- $password := urlquery .root.Values.amqp.password | replace "+" "%20" -}}
{{- regexReplaceAll "^([a-z]+://)([^@/]*@)?" .url (printf "${1}%s:%s@" $user $password) -}}
{{- end -}}

{{/* S3 store URL (HERD_STORE). */}}
{{- define "herd.storeUrl" -}}
{{- $url := printf "s3://%s" .Values.storage.bucket -}}
{{- with .Values.storage.prefix -}}
{{- $url = printf "%s/%s" $url (trimSuffix "/" .) -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* Queue names as herd's queue crate declares them (queue/src/names.rs): a character
other than a letter, digit, '-' or '_' is written as '_'; run ids are DNS labels already,
generator and judge names may hold dots. Argument of the first: dict root and generator. */}}
{{- define "herd.generationQueue" -}}
{{- printf "herd.%s.gen.%s" .root.Values.run.id (replace "." "_" .generator) -}}
{{- end -}}
{{- define "herd.judgeQueue" -}}
{{- printf "herd.%s.judge.%s" .Values.run.id (replace "." "_" .Values.judge.name) -}}
{{- end -}}

{{/* Pod security context shared by every pod. */}}
{{- define "herd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser | int }}
runAsGroup: {{ .Values.security.runAsGroup | int }}
fsGroup: {{ .Values.security.runAsGroup | int }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context shared by every container. */}}
{{- define "herd.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment every role shares: run, logging, metrics, broker, storage. */}}
{{- define "herd.commonEnv" -}}
- name: HERD_RUN_ID
  value: {{ .Values.run.id | quote }}
- name: HERD_LOG
  value: {{ .Values.run.logLevel | quote }}
- name: HERD_METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (.Values.metrics.port | int) | quote }}
{{- if eq .Values.amqp.credentialsAs "env" }}
- name: HERD_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "herd.amqpSecretName" . }}
      key: {{ .Values.amqp.secretKeys.url }}
{{- else }}
- name: HERD_AMQP_URL
  value: {{ include "herd.amqpUrl" . | quote }}
- name: HERD_AMQP_PASSWORD_FILE
  value: /etc/herd/amqp/password
{{- end }}
- name: HERD_STORE
  value: {{ include "herd.storeUrl" . | quote }}
- name: AWS_REGION
  value: {{ .Values.storage.region | quote }}
{{- with .Values.storage.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- if hasPrefix "http://" . }}
- name: AWS_ALLOW_HTTP
  value: "true"
{{- end }}
{{- end }}
{{- if not .Values.storage.pathStyle }}
- name: AWS_VIRTUAL_HOSTED_STYLE_REQUEST
  value: "true"
{{- end }}
{{- if include "herd.storageHasKeys" . }}
{{- if eq .Values.storage.credentialsAs "file" }}
- name: AWS_ACCESS_KEY_ID_FILE
  value: /etc/herd/s3/access-key-id
- name: AWS_SECRET_ACCESS_KEY_FILE
  value: /etc/herd/s3/secret-access-key
{{- else }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "herd.storageSecretName" . }}
      key: {{ .Values.storage.secretKeys.accessKeyId }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "herd.storageSecretName" . }}
      key: {{ .Values.storage.secretKeys.secretAccessKey }}
{{- end }}
{{- end }}
{{- if .Values.amqp.tlsCa.secretName }}
- name: HERD_AMQP_CA_FILE
  value: /etc/herd/amqp-ca/ca.pem
{{- end }}
{{- if .Values.storage.tlsCa.secretName }}
- name: HERD_S3_CA_FILE
  value: /etc/herd/s3-ca/ca.pem
{{- end }}
- name: XDG_CACHE_HOME
  value: /var/cache/herd
{{- end -}}

{{/* The engine settings of a worker role, as the variables `herd worker` and
`herd judge-worker` read. Argument: dict device (cpu or cuda), tensorParallel, role
(generation or judge) and settings (the role's values: batchSize, stepTokens,
kvCacheTokens, gpuMemoryFraction; a null one takes the default below).
Defaults, from bench/gpu/README.md's measurements on an H200 (Llama-3.1-8B shape):
on a GPU, 256 sequences at once and 8,192 tokens per step for generation (18.6k output
tok/s at batch 256) and 16,384 per step for the judge (logprob prefill flat from 8k to 32k
tokens a step); on the CPU, herd's own defaults (16 sequences, 512 tokens a step); 0.9 of
each GPU's memory; the key/value cache sized from what the weights leave. */}}
{{- define "herd.engineEnv" -}}
{{- $cuda := eq .device "cuda" -}}
{{- $batch := .settings.batchSize | default (ternary 256 16 $cuda) -}}
{{- $step := .settings.stepTokens | default (ternary (ternary 16384 8192 (eq .role "judge")) 512 $cuda) -}}
- name: HERD_DEVICE
  value: {{ .device | quote }}
- name: HERD_TENSOR_PARALLEL
  value: {{ .tensorParallel | int | toString | quote }}
- name: HERD_BATCH_SIZE
  value: {{ $batch | int | toString | quote }}
- name: HERD_STEP_TOKENS
  value: {{ $step | int | toString | quote }}
{{- with .settings.kvCacheTokens }}
- name: HERD_KV_CACHE_TOKENS
  value: {{ . | int | toString | quote }}
{{- end }}
- name: HERD_GPU_MEMORY_FRACTION
  value: {{ .settings.gpuMemoryFraction | default 0.9 | toString | quote }}
{{- end -}}

{{/* A role's environment: the shared one, the engine's (for the workers), then extra
variables; argument: dict root, engine (the argument of herd.engineEnv, workers only),
ncclEnv (a map, written in its keys' order) and extraEnv (EnvVar objects). */}}
{{- define "herd.env" -}}
{{ include "herd.commonEnv" .root }}
{{- with .engine }}
{{ include "herd.engineEnv" . }}
{{- end }}
{{- range $name, $value := .ncclEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volume mounts every container shares. */}}
{{- define "herd.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /var/cache/herd
{{- if ne .Values.amqp.credentialsAs "env" }}
- name: amqp-credentials
  mountPath: /etc/herd/amqp
  readOnly: true
{{- end }}
{{- if and (include "herd.storageHasKeys" .) (eq .Values.storage.credentialsAs "file") }}
- name: s3-credentials
  mountPath: /etc/herd/s3
  readOnly: true
{{- end }}
{{- if .Values.amqp.tlsCa.secretName }}
- name: amqp-ca
  mountPath: /etc/herd/amqp-ca
  readOnly: true
{{- end }}
{{- if .Values.storage.tlsCa.secretName }}
- name: s3-ca
  mountPath: /etc/herd/s3-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes every pod shares. */}}
{{- define "herd.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.security.tmpSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.security.cacheSizeLimit }}
{{- if ne .Values.amqp.credentialsAs "env" }}
- name: amqp-credentials
  secret:
    secretName: {{ include "herd.amqpSecretName" . }}
    defaultMode: 288 # 0440: owner and group may read
    items:
      - key: {{ .Values.amqp.secretKeys.password }}
        path: password
{{- end }}
{{- if and (include "herd.storageHasKeys" .) (eq .Values.storage.credentialsAs "file") }}
- name: s3-credentials
  secret:
    secretName: {{ include "herd.storageSecretName" . }}
    defaultMode: 288
    items:
      - key: {{ .Values.storage.secretKeys.accessKeyId }}
        path: access-key-id
      - key: {{ .Values.storage.secretKeys.secretAccessKey }}
        path: secret-access-key
{{- end }}
{{- if .Values.amqp.tlsCa.secretName }}
- name: amqp-ca
  secret:
    secretName: {{ .Values.amqp.tlsCa.secretName }}
    defaultMode: 292 # 0444: a CA certificate is public
    items:
      - key: {{ .Values.amqp.tlsCa.key }}
        path: ca.pem
{{- end }}
{{- if .Values.storage.tlsCa.secretName }}
- name: s3-ca
  secret:
    secretName: {{ .Values.storage.tlsCa.secretName }}
    defaultMode: 292
    items:
      - key: {{ .Values.storage.tlsCa.key }}
        path: ca.pem
{{- end }}
{{- end -}}

{{/* Model volume mount; argument: modelVolume values. */}}
{{- define "herd.modelVolumeMount" -}}
{{- if ne .type "none" -}}
- name: models
  mountPath: {{ .mountPath }}
  readOnly: true
  {{- with .subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Model volume; argument: modelVolume values. */}}
{{- define "herd.modelVolume" -}}
{{- if eq .type "pvc" -}}
- name: models
  persistentVolumeClaim:
    claimName: {{ .claimName }}
    readOnly: true
{{- else if eq .type "hostPath" -}}
- name: models
  hostPath:
    path: {{ .hostPath }}
    type: Directory
{{- end }}
{{- end -}}

{{/* A role's own volumes and mounts (extraVolumes, extraVolumeMounts), after the chart's.
Argument: dict role (its values) and what ("volumes" or "mounts"). A mount must name one of
the role's extra volumes or a volume of the chart; helm stops otherwise. */}}
{{- define "herd.extraVolumes" -}}
{{- $names := list "tmp" "cache" "models" "shm" "amqp-credentials" "s3-credentials" "amqp-ca" "s3-ca" -}}
{{- range .role.extraVolumes -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- range .role.extraVolumeMounts -}}
{{- if not (has .name $names) -}}
{{- fail (printf "extraVolumeMounts: %q is neither in extraVolumes nor a volume of the chart" .name) -}}
{{- end -}}
{{- end -}}
{{- $items := ternary .role.extraVolumes .role.extraVolumeMounts (eq .what "volumes") -}}
{{- with $items -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/* Shared memory for NCCL between the ranks of a tensor-parallel model; argument:
sizeLimit. */}}
{{- define "herd.shmVolume" -}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ . }}
{{- end -}}

{{/* Probes on /healthz of the metrics port; argument: dict root and, for the workers
(which load a model first), startup: true and an optional startupFailureThreshold. */}}
{{- define "herd.probes" -}}
{{- $p := .root.Values.probes -}}
{{- if .startup -}}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.startup.periodSeconds | int }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds | int }}
  failureThreshold: {{ default $p.startup.failureThreshold .startupFailureThreshold | int }}
{{ end -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.liveness.periodSeconds | int }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds | int }}
  failureThreshold: {{ $p.liveness.failureThreshold | int }}
readinessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.readiness.periodSeconds | int }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds | int }}
  failureThreshold: {{ $p.readiness.failureThreshold | int }}
{{- end -}}

{{/* Resources with a GPU count put in requests and limits; argument: dict resources and
gpus. Empty when there is neither. */}}
{{- define "herd.resources" -}}
{{- $resources := deepCopy (.resources | default dict) -}}
{{- with .gpus | int -}}
{{- $gpu := dict "nvidia.com/gpu" . -}}
{{- $_ := set $resources "requests" (merge ($resources.requests | default dict) $gpu) -}}
{{- $_ := set $resources "limits" (merge ($resources.limits | default dict) $gpu) -}}
{{- end -}}
{{- with $resources -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/* Pod placement, runtime and pull secrets; argument: dict root and role (values with
nodeSelector, tolerations, affinity, runtimeClassName, priorityClassName). */}}
{{- define "herd.podScheduling" -}}
{{- with .role.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .role.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A KEDA ScaledObject's spec for a worker Deployment; argument: dict root, target (the
Deployment's name), queue, minReplicas, maxReplicas and queueLength. */}}
{{- define "herd.scaledObjectSpec" -}}
{{- $scaling := .root.Values.autoscaling -}}
scaleTargetRef:
  apiVersion: apps/v1
  kind: Deployment
  name: {{ .target }}
pollingInterval: {{ $scaling.pollingInterval | int }}
cooldownPeriod: {{ $scaling.cooldownPeriod | int }}
advanced:
  horizontalPodAutoscalerConfig:
    behavior:
      scaleDown:
        stabilizationWindowSeconds: {{ $scaling.scaleDownStabilizationSeconds | int }}
        policies:
          - type: Pods
            value: 1
            periodSeconds: 60
minReplicaCount: {{ .minReplicas | int }}
maxReplicaCount: {{ .maxReplicas | int }}
triggers:
  - type: rabbitmq
    metadata:
      # http: the management API counts ready and unacknowledged messages, so jobs a
      # worker holds keep it alive; the AMQP protocol would count ready ones only.
      protocol: http
      mode: QueueLength
      queueName: {{ .queue | quote }}
      value: {{ .queueLength | int | toString | quote }}
    authenticationRef:
      name: {{ include "herd.fullname" .root }}-rabbitmq
{{- end -}}
