{{/*
Helpers shared by the templates. Object names, labels, commands and pod settings are spelt
once here; launcher/ builds the same objects for `python -m launcher sweep --backend
kubernetes` (tests/test_chart_matches_launcher.py compares the two).
*/}}

{{/* The sweep name: .Values.name, else the release name; it prefixes every object name. */}}
{{- define "finetune.sweep" -}}
{{- $name := .Values.name | default .Release.Name -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "sweep name %q cannot be a Kubernetes name: use lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (set name=...)." $name) -}}
{{- end -}}
{{- if gt (len $name) 40 -}}
{{- fail (printf "sweep name %q is longer than 40 characters: set a shorter name=..." $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* A URI without trailing slashes, as common.storage.normalize spells gs:// URIs. */}}
{{- define "finetune.uri" -}}
{{- regexReplaceAll "/+$" . "" -}}
{{- end -}}

{{/* The sweep directory. */}}
{{- define "finetune.out" -}}
{{- include "finetune.uri" .Values.out -}}
{{- end -}}

{{/*
The learning rates as Python writes them (repr / format "g": 0.01, 0.0001, 1e-05), a JSON list
of strings. YAML numbers and numeric strings (`--set lrs={0.1,0.01}` passes strings) both come
in; each is read as a float64 and printed with Go's %v: the shortest form that reads back as
the same number, with an exponent below 1e-4 as in Python. Below 1e6 (the schema's bound) the
two languages also agree on when to use an exponent. Duplicates and lrs <= 0 are refused here
too, since the schema cannot compare a string with a number.
*/}}
{{- define "finetune.lrs" -}}
{{- $seen := dict -}}
{{- $out := list -}}
{{- range .Values.lrs -}}
{{- $lr := float64 . -}}
{{- if or (le $lr 0.0) (ge $lr 1000000.0) -}}
{{- fail (printf "lrs: %v is not a learning rate: each must be a number > 0 and < 1000000." .) -}}
{{- end -}}
{{- $text := printf "%v" $lr -}}
{{- if hasKey $seen $text -}}
{{- fail (printf "lrs: %s is listed twice: give each learning rate once." $text) -}}
{{- end -}}
{{- $_ := set $seen $text true -}}
{{- $out = append $out $text -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The run directory name of a learning rate: common.layout.run_name_for_lr (lr-0.01, lr-1e-05). */}}
{{- define "finetune.runName" -}}
{{- printf "lr-%s" . -}}
{{- end -}}

{{/* The trainer Job name of a run: <sweep>-lr-0-01 ('.' is not allowed in a pod's hostname). */}}
{{- define "finetune.jobName" -}}
{{- $name := printf "%s-%s" .sweep (include "finetune.runName" .lr | replace "." "-" | replace "+" "") -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "trainer Job name %q is longer than 63 characters: set a shorter name=..." $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/*
With trainer.workers > 1, the pod of index i is named <job>-<i> (its hostname): Kubernetes does
not shorten it, so the last one must fit a DNS label too. Call with (dict "job" $job "workers" N).
*/}}
{{- define "finetune.checkWorkerHostnames" -}}
{{- $host := printf "%s-%d" .job (sub .workers 1) -}}
{{- if gt (len $host) 63 -}}
{{- fail (printf "with %d workers, the hostname of the last one, %q, would be %d characters long (at most 63): set a shorter name=..." .workers $host (len $host)) -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries; call with (dict "root" $ "component" "trainer"). */}}
{{- define "finetune.selectorLabels" -}}
app.kubernetes.io/name: inception-finetune
app.kubernetes.io/instance: {{ include "finetune.sweep" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Labels of a pod template: no chart version, so that an upgrade of the chart alone never
changes a pod template (a Job's is immutable; a Deployment's would restart). For a run, call
with "lr" too: the run name and lr labels are added.
*/}}
{{- define "finetune.podLabels" -}}
{{ include "finetune.selectorLabels" . }}
app.kubernetes.io/part-of: inception-finetune
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
inception-finetune/sweep: {{ include "finetune.sweep" .root }}
{{- with .lr }}
inception-finetune/lr: {{ . | quote }}
inception-finetune/run: {{ include "finetune.runName" . }}
{{- end }}
{{- end -}}

{{/* Labels of an object: the pod labels plus the chart (name-version). */}}
{{- define "finetune.labels" -}}
{{ include "finetune.podLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
Labels of the tuner's ServiceAccount, Role and RoleBinding (tuner.rbac.create): no sweep
(instance) label, see tuner-rbac.yaml.
*/}}
{{- define "finetune.launcherLabels" -}}
app.kubernetes.io/name: inception-finetune
app.kubernetes.io/component: launcher
app.kubernetes.io/part-of: inception-finetune
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "finetune.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "finetune.sweep" .) -}}
{{- end -}}

{{/* image: repository:tag of "cpu" or "gpu"; call with (list $ "cpu"). */}}
{{- define "finetune.image" -}}
{{- $root := index . 0 -}}
{{- $img := index $root.Values.image (index . 1) -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- end -}}

{{/* The Pod Security "restricted" profile: pod level. */}}
{{- define "finetune.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.uid }}
runAsGroup: {{ .Values.uid }}
fsGroup: {{ .Values.uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Pod Security "restricted" profile: container level. */}}
{{- define "finetune.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/*
What every pod of the sweep shares: service account, pull secrets, security context.
*/}}
{{- define "finetune.podCommon" -}}
serviceAccountName: {{ include "finetune.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- include "finetune.podSecurityContext" . | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
Environment of every container: writable homes on the emptyDirs (the root filesystem is
read-only), the bucket credentials file, the emulator for tests.
*/}}
{{- define "finetune.env" -}}
- name: HOME
  value: /tmp
- name: KERAS_HOME
  value: /var/cache/keras
- name: PYTHONUNBUFFERED
  value: "1"
{{- if .Values.credentials.secretName }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ printf "/var/secrets/google/%s" .Values.credentials.key | quote }}
{{- end }}
{{- with .Values.storageEmulatorHost }}
- name: STORAGE_EMULATOR_HOST
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "finetune.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: keras-cache
  mountPath: /var/cache/keras
{{- if .Values.credentials.secretName }}
- name: credentials
  mountPath: /var/secrets/google
  readOnly: true
{{- end }}
{{- end -}}

{{- define "finetune.volumes" -}}
- name: tmp
  emptyDir: {}
- name: keras-cache
  emptyDir: {}
{{- if .Values.credentials.secretName }}
- name: credentials
  secret:
    secretName: {{ .Values.credentials.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* nodeSelector and tolerations of a component's values (.Values.trainer, ...). */}}
{{- define "finetune.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Flags the chart sets itself, which trainerArgs may not repeat. */}}
{{- define "finetune.checkTrainerArgs" -}}
{{- range .Values.trainerArgs -}}
{{- if regexMatch "^--(data|run-dir|lr|metrics-port|exit-code-on-stop|workers|worker-hosts|worker-index)(=|$)" . -}}
{{- fail (printf "trainerArgs may not contain %s: the chart sets it for each run." .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
