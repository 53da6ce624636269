{{/* Chart name, overridable with nameOverride. */}}
{{- define "ferrite.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: the release name when it already contains the chart name (so release
"ferrite" gives ferrite-controller-manager), else <release>-<chart>. */}}
{{- define "ferrite.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ferrite.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels shared by every object; takes (dict "root" $ "component" "scheduler"). */}}
{{- define "ferrite.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ferrite
{{ include "ferrite.selectorLabels" . }}
{{- end -}}

{{- define "ferrite.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrite.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A ClusterRoleBinding or kube-system RoleBinding of a component's ServiceAccount; takes
(dict "root" $ "component" "scheduler" "kind" "ClusterRole" "role" "system:kube-scheduler"
"suffix" "kube-scheduler"). */}}
{{- define "ferrite.binding" -}}
{{- $name := printf "%s-%s" (include "ferrite.fullname" .root) .component }}
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ if eq .kind "Role" }}RoleBinding{{ else }}ClusterRoleBinding{{ end }}
metadata:
  name: {{ printf "%s:%s" $name .suffix }}
  {{- if eq .kind "Role" }}
  # The Role lives in kube-system, next to the Leases and the
  # extension-apiserver-authentication ConfigMap it grants.
  namespace: kube-system
  {{- end }}
  labels:
    {{- include "ferrite.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ .kind }}
  name: {{ .role | quote }}
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ .root.Release.Namespace }}
{{- end -}}

{{/* The one role the chart defines per component: read its configuration resource
(config.ferrite.dev, from the chart's crds/) and write that resource's status, nothing else; and
its binding. Takes (dict "root" $ "component" "scheduler" "resource" "schedulerprofiles"). */}}
{{- define "ferrite.configurationRole" -}}
{{- $name := printf "%s-%s" (include "ferrite.fullname" .root) .component }}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ printf "%s:configuration" $name }}
  labels:
    {{- include "ferrite.labels" . | nindent 4 }}
rules:
  - apiGroups: ["config.ferrite.dev"]
    resources: [{{ .resource | quote }}]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["config.ferrite.dev"]
    resources: [{{ printf "%s/status" .resource | quote }}]
    verbs: ["update"]
---
{{ include "ferrite.binding" (merge (dict "kind" "ClusterRole" "role" (printf "%s:configuration" $name) "suffix" "configuration") .) }}
{{- end -}}

{{/* One component: ServiceAccount, Deployment and PodDisruptionBudget; takes (dict "root" $
"component" "scheduler" "values" .Values.scheduler "args" (list ...) "volumes" (list ...)
"mounts" (list ...)). */}}
{{- define "ferrite.component" -}}
{{- $root := .root -}}
{{- $values := .values -}}
{{- $name := printf "%s-%s" (include "ferrite.fullname" $root) .component -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferrite.labels" . | nindent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferrite.labels" . | nindent 4 }}
spec:
  replicas: {{ $values.replicas }}
  selector:
    matchLabels:
      {{- include "ferrite.selectorLabels" . | nindent 6 }}
  strategy:
    # One replica at a time, never below replicas-1: the standby keeps the Lease warm.
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 0
      maxUnavailable: 1
  template:
    metadata:
      labels:
        {{- include "ferrite.labels" . | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $root.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      hostNetwork: {{ $root.Values.hostNetwork }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      affinity:
        podAntiAffinity:
          # Spread the replicas over nodes when there are several; a single-node control plane
          # still runs them (unless hostNetwork makes the secure port collide).
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "ferrite.selectorLabels" . | nindent 20 }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: {{ .component }}
          image: {{ include "ferrite.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - {{ .component }}
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
            {{- range $values.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          {{- with $root.Values.apiServer.host }}
          env:
            # In place of the kubernetes Service's address, which the kubelet would inject.
            - name: KUBERNETES_SERVICE_HOST
              value: {{ . | quote }}
            - name: KUBERNETES_SERVICE_PORT
              value: {{ $root.Values.apiServer.port | toString | quote }}
          {{- end }}
          ports:
            - name: https
              containerPort: {{ $values.securePort }}
              protocol: TCP
          livenessProbe:
            httpGet:
              scheme: HTTPS
              path: /healthz
              port: https
            initialDelaySeconds: 10
            periodSeconds: 10
            timeoutSeconds: 15
            failureThreshold: 8
          readinessProbe:
            httpGet:
              scheme: HTTPS
              path: /readyz
              port: https
            periodSeconds: 5
            timeoutSeconds: 15
            failureThreshold: 3
          {{- with $values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop:
                - ALL
          {{- with .mounts }}
          volumeMounts:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      {{- with .volumes }}
      volumes:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if $values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferrite.labels" . | nindent 4 }}
spec:
  minAvailable: {{ $values.podDisruptionBudget.minAvailable }}
  selector:
    matchLabels:
      {{- include "ferrite.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The --leader-elect* flags of a component. */}}
{{- define "ferrite.leaderElectionArgs" -}}
{{- $args := list (printf "--leader-elect=%t" .leaderElection.enabled) -}}
{{- with .leaderElection.resourceName -}}
{{- $args = append $args (printf "--leader-elect-resource-name=%s" .) -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}
