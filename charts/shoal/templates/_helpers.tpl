{{/* Names and labels shared by every object of the release. */}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
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

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shoal.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Secret and ConfigMap names: the user's own Secret, or the one the chart makes. */}}
{{- define "shoal.swarmKeySecret" -}}
{{- .Values.swarmKey.existingSecret | default (printf "%s-swarm-key" (include "shoal.fullname" .)) -}}
{{- end -}}
{{- define "shoal.seedAuthoritySecret" -}}
{{- .Values.seedAuthority.existingSecret | default (printf "%s-seed-authority" (include "shoal.fullname" .)) -}}
{{- end -}}
{{- define "shoal.seedAuthorityConfigMap" -}}
{{- printf "%s-seed-authority" (include "shoal.fullname" .) -}}
{{- end -}}
{{- define "shoal.adminTokenSecret" -}}
{{- .Values.seed.adminToken.existingSecret | default (printf "%s-admin-token" (include "shoal.fullname" .)) -}}
{{- end -}}

{{/* The peer Service every node bootstraps from: agents and seeds, ready or not. */}}
{{- define "shoal.peerService" -}}
{{- printf "%s-peers" (include "shoal.fullname" .) -}}
{{- end -}}
{{- define "shoal.seedService" -}}
{{- printf "%s-seed" (include "shoal.fullname" .) -}}
{{- end -}}

{{/* Seeds need peer-to-peer: they serve the cluster through it. */}}
{{- define "shoal.seedsEnabled" -}}
{{- if and .Values.seed.enabled .Values.p2p.enabled -}}true{{- end -}}
{{- end -}}

{{/* Flags every node (agent or seed) shares: upstreams, peers, trust, logs. */}}
{{- define "shoal.commonArgs" -}}
{{- range .Values.registries }}
- --registry={{ . }}
{{- end }}
{{- with .Values.hostedRegistry }}
- --hosted-registry={{ . }}
{{- end }}
{{- if .Values.p2p.enabled }}
- --p2p-listen=/ip4/0.0.0.0/tcp/{{ .Values.p2p.port }}
- --bootstrap=dns:{{ include "shoal.peerService" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.p2p.port }}
- --swarm-key=/etc/shoal/swarm/swarm.key
{{- with .Values.p2p.chunkSize }}
- --chunk-size={{ . }}
{{- end }}
{{- range .Values.seedAuthority.seedPeers }}
- --seed-peer={{ . }}
{{- end }}
{{- else }}
- --p2p=false
{{- end }}
{{- if .Values.dockerConfig.existingSecret }}
- --docker-config=/etc/shoal/docker/config.json
{{- range .Values.dockerConfig.nodeWideCredentials }}
- --node-wide-credentials={{ . }}
{{- end }}
{{- end }}
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
{{- end -}}

{{/* Environment every node shares: the seed authority public keys, GOMEMLIMIT from the limit. */}}
{{- define "shoal.commonEnv" -}}
{{- if .Values.p2p.enabled }}
- name: SHOAL_SEED_AUTHORITY
  valueFrom:
    configMapKeyRef:
      name: {{ include "shoal.seedAuthorityConfigMap" . }}
      key: seed-authorities
{{- end }}
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end -}}

{{- define "shoal.commonVolumeMounts" -}}
{{- if .Values.p2p.enabled }}
- name: swarm-key
  mountPath: /etc/shoal/swarm
  readOnly: true
{{- end }}
{{- if .Values.dockerConfig.existingSecret }}
- name: docker-config
  mountPath: /etc/shoal/docker
  readOnly: true
{{- end }}
{{- end -}}

{{- define "shoal.commonVolumes" -}}
{{- if .Values.p2p.enabled }}
- name: swarm-key
  secret:
    secretName: {{ include "shoal.swarmKeySecret" . }}
    defaultMode: 0440
    items:
      - key: swarm.key
        path: swarm.key
{{- end }}
{{- if .Values.dockerConfig.existingSecret }}
- name: docker-config
  secret:
    secretName: {{ .Values.dockerConfig.existingSecret }}
    defaultMode: 0440
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- end -}}

{{/* What containerd sends to the agent: the given list, or every upstream and the hosted registry. */}}
{{- define "shoal.mirroredRegistries" -}}
{{- $regs := .Values.runtime.containerd.mirroredRegistries -}}
{{- if not $regs -}}
{{- $regs = without .Values.registries "none" -}}
{{- if include "shoal.seedsEnabled" . -}}
{{- $regs = append $regs (.Values.hostedRegistry | default "shoal.local") -}}
{{- end -}}
{{- end -}}
{{- toJson $regs -}}
{{- end -}}

{{/* The post-delete cleanup pods: a name of their own, so that no Service of the release selects them. */}}
{{- define "shoal.cleanupSelectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}-cleanup
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cleanup
{{- end -}}
