{{/* Names ----------------------------------------------------------------------------------------------- */}}

{{- define "mlops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlops.fullname" -}}
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

{{/* A component's name: <fullname>-<component>, e.g. mlops-model-service. */}}
{{- define "mlops.componentName" -}}
{{- printf "%s-%s" (include "mlops.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------------------- */}}

{{- define "mlops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlops.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mlops.labels" -}}
{{ include "mlops.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The project image, checked: repository and tag required, `latest` refused, digest optional. */}}
{{- define "mlops.image" -}}
{{- $repository := required "image.repository: the project image's repository is required (the image `docker compose build` makes, pushed to your registry)" .Values.image.repository -}}
{{- $tag := required "image.tag: the project image's tag is required (one build, e.g. 3.3.2-<git sha>); there is no default" .Values.image.tag | toString -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: `latest` is refused; name one build of the project image (e.g. 3.3.2-<git sha>) so every pod runs the same code" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" .Values.image.digest) -}}
{{- fail (printf "image.digest: %q is not a sha256 digest (sha256:<64 hex>)" .Values.image.digest) -}}
{{- end -}}
{{- printf "%s:%s@%s" $repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* A required Secret reference: fails naming the value when its name is missing.
     Usage: include "mlops.secretName" (dict "secret" .Values.secrets.adminToken "path" "secrets.adminToken" "what" "...") */}}
{{- define "mlops.secretName" -}}
{{- required (printf "%s.name: the name of the Secret holding %s is required (the chart never holds the value itself; see docs/operating.md, Kubernetes)" .path .what) .secret.name -}}
{{- end -}}

{{/* Security contexts and the pod spec's common part. */}}
{{- define "mlops.podSecurity" -}}
serviceAccountName: {{ include "mlops.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The S3 client's environment: endpoint (optional), region, and static keys when a Secret is named. */}}
{{- define "mlops.s3Env" -}}
{{- if .Values.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
{{- with .Values.secrets.s3Credentials }}
{{- if .name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* MLflow's tracking URI as the model service and the bootstrap Job see it. */}}
{{- define "mlops.mlflowTrackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s:%v" (include "mlops.componentName" (dict "root" . "component" "mlflow")) .Values.mlflow.service.port -}}
{{- else -}}
{{- required "mlflow.externalTrackingUri: with mlflow.enabled false, the URI of the MLflow server to use is required" .Values.mlflow.externalTrackingUri -}}
{{- end -}}
{{- end -}}

{{/* Where the pipeline configs are inside the containers. */}}
{{- define "mlops.configDir" -}}
{{- if eq .Values.pipelineConfigs.source "values" -}}
{{- .Values.pipelineConfigs.mountPath -}}
{{- else if eq .Values.pipelineConfigs.source "image" -}}
{{- .Values.pipelineConfigs.imagePath -}}
{{- else -}}
{{- fail (printf "pipelineConfigs.source: %q is neither `image` nor `values`" .Values.pipelineConfigs.source) -}}
{{- end -}}
{{- end -}}

{{- define "mlops.configVolume" -}}
{{- if eq .Values.pipelineConfigs.source "values" }}
- name: pipeline-configs
  configMap:
    name: {{ include "mlops.componentName" (dict "root" . "component" "pipeline-configs") }}
{{- end }}
{{- end -}}

{{- define "mlops.configVolumeMount" -}}
{{- if eq .Values.pipelineConfigs.source "values" }}
- name: pipeline-configs
  mountPath: {{ .Values.pipelineConfigs.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Values checked once for the whole chart (included by the model service's Deployment, always rendered). */}}
{{- define "mlops.validate" -}}
{{- $url := required "modelStore.url: the model store's s3://<bucket>/<prefix> is required (MLOPS_MODEL_STORE_URL of the model service and of Airflow's tasks)" .Values.modelStore.url -}}
{{- if not (hasPrefix "s3://" $url) -}}
{{- fail (printf "modelStore.url: %q is not an s3://<bucket>/<prefix> URL" $url) -}}
{{- end -}}
{{- $autoscaling := .Values.modelService.autoscaling -}}
{{- if $autoscaling.enabled -}}
{{- if lt (int $autoscaling.minReplicas) 1 -}}
{{- fail (printf "modelService.autoscaling.minReplicas: %v must be at least 1" $autoscaling.minReplicas) -}}
{{- end -}}
{{- if gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas) -}}
{{- fail (printf "modelService.autoscaling: minReplicas (%v) is above maxReplicas (%v)" $autoscaling.minReplicas $autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- $pdb := .Values.modelService.podDisruptionBudget -}}
{{- if $pdb.enabled -}}
{{- $replicas := ternary $autoscaling.minReplicas .Values.modelService.replicas $autoscaling.enabled | int -}}
{{- if ge (int $pdb.minAvailable) $replicas -}}
{{- fail (printf "modelService.podDisruptionBudget.minAvailable (%v) must be below the replica count (%v, %s): otherwise no pod may ever be evicted and no node drains" $pdb.minAvailable $replicas (ternary "autoscaling.minReplicas" "modelService.replicas" $autoscaling.enabled)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.pipelineConfigs.source "values") (not .Values.pipelineConfigs.files) -}}
{{- fail "pipelineConfigs.files: with pipelineConfigs.source `values`, at least one config file is required (--set-file 'pipelineConfigs.files.<name>\\.yaml=<path>')" -}}
{{- end -}}
{{- end -}}
