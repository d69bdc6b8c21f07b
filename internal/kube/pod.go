package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// Labels on everything the launcher creates. LabelServer scopes clean-up to
// one server; the others say whose worker a pod is, for operators.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	LabelComponent   = "app.kubernetes.io/component"
	LabelServer      = "atoll.dev/server"
	LabelAccount     = "atoll.dev/account"
	LabelEnvironment = "atoll.dev/environment"
	LabelWorker      = "atoll.dev/worker"
	LabelMachineType = "atoll.dev/machine-type"

	managedBy       = "atoll"
	componentWorker = "worker"
)

// workerUID is the unprivileged user workers run as: nobody, which the
// server's /data directories belong to as on the local launcher.
const workerUID = 65534

// Paths inside the worker pod.
const (
	podSecretDir = "/atoll/secret"
	podCacheDir  = "/atoll/cache"
	podEnvDir    = "/atoll/env"
	podRuntime   = "/atoll/runtime"
	podSDK       = "/atoll/sdk"
	podHome      = "/home/atoll"
	podData      = "/data"
	tokenKey     = "token"
	fetchKey     = "archive-credential"
	workerName   = "worker"
	fetchName    = "fetch"
	agentBinary  = "/usr/local/bin/atoll"
)

// podSpec is everything one worker pod is made from.
type podSpec struct {
	Name        string
	Namespace   string
	Server      string
	Image       string
	Worker      scheduler.WorkerSpec
	Type        TypeConfig
	DialAddr    string // host:port pods dial back to
	NestedAddr  string // host:port of the server's gRPC for nested calls ("" without a token)
	ArchiveURL  string
	EnvDigest   string
	Runtime     string // digest
	SDK         string // digest
	CacheClaim  string // "" : an emptyDir per pod
	DataClaim   string // "" : no /data
	SecretName  string
	PullPolicy  corev1.PullPolicy
	ServiceAcct string
}

// labelValue makes s a valid label value (63 characters of [A-Za-z0-9._-],
// alphanumeric at both ends), keeping it readable where it already is and
// hashing the rest.
func labelValue(s string) string {
	if validLabel.MatchString(s) && len(s) <= 63 {
		return s
	}
	clean := strings.Trim(invalidLabelChars.ReplaceAllString(s, "-"), "-._")
	sum := sha256.Sum256([]byte(s))
	suffix := hex.EncodeToString(sum[:4])
	if len(clean) > 50 {
		clean = strings.Trim(clean[:50], "-._")
	}
	if clean == "" {
		return "h" + suffix
	}
	return clean + "-" + suffix
}

var (
	dnsLabel          = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	validLabel        = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	invalidLabelChars = regexp.MustCompile(`[^-A-Za-z0-9_.]+`)
)

// podName is the worker's pod name: scheduler ids are lowercase hex with a
// prefix, valid DNS labels already.
func podName(workerID string) string { return "atoll-" + strings.ToLower(workerID) }

func serverLabels(server string) map[string]string {
	return map[string]string{LabelManagedBy: managedBy, LabelServer: labelValue(server)}
}

func (s podSpec) labels() map[string]string {
	l := serverLabels(s.Server)
	l[LabelComponent] = componentWorker
	l[LabelAccount] = labelValue(s.Worker.Account)
	l[LabelEnvironment] = labelValue(shortKey(s.Worker.Environment.Key))
	l[LabelWorker] = labelValue(s.Worker.ID)
	l[LabelMachineType] = labelValue(s.Worker.Machine.Name)
	return l
}

func shortKey(k string) string {
	if len(k) > 16 {
		return k[:16]
	}
	return k
}

// resources are the machine type's limits, requested in full: a worker is
// held to what it was promised and gets nothing it was not (QoS Guaranteed).
func resources(t machine.Type, typeCfg TypeConfig) corev1.ResourceRequirements {
	list := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(int64(t.CPUs*1000+0.5), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(t.MemoryBytes, resource.BinarySI),
	}
	if t.GPUs > 0 {
		name := typeCfg.GPUResource
		if name == "" {
			name = DefaultGPUResource
		}
		list[corev1.ResourceName(name)] = *resource.NewQuantity(int64(t.GPUs), resource.DecimalSI)
	}
	return corev1.ResourceRequirements{Requests: list, Limits: list.DeepCopy()}
}

// restricted is the container security context the Pod Security
// "restricted" profile asks for, with a read-only root filesystem.
func restricted() *corev1.SecurityContext {
	no, yes := false, true
	uid := int64(workerUID)
	return &corev1.SecurityContext{
		RunAsNonRoot:             &yes,
		RunAsUser:                &uid,
		RunAsGroup:               &uid,
		AllowPrivilegeEscalation: &no,
		Privileged:               &no,
		ReadOnlyRootFilesystem:   &yes,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// secret holds the worker's token and its archive credential: files in a
// volume only the worker pod mounts, never environment variables (which the
// API shows to anyone who can read the pod).
func (s podSpec) secret(token, credential string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.SecretName, Namespace: s.Namespace, Labels: s.labels()},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{tokenKey: []byte(token), fetchKey: []byte(credential)},
	}
}

// pod is the worker pod: an init container that makes the archives present
// in the node's cache, and the worker, which mounts each read-only and dials
// back.
// agentArgs is the worker agent's command line in the pod.
func (s podSpec) agentArgs() []string {
	args := []string{"worker", "--python", podEnvDir + "/bin/python", "--sdk", podSDK, "--runtime", podRuntime,
		"--connect", s.DialAddr, "--token-file", podSecretDir + "/" + tokenKey, "--workdir", podHome}
	if s.Worker.PreloadCloudpickle {
		args = append(args, "--preload-cloudpickle")
	}
	return args
}

func (s podSpec) pod() *corev1.Pod {
	no, yes := false, true
	uid := int64(workerUID)
	grace := int64(1)
	res := resources(s.Worker.Machine, s.Type)
	secretMode := int32(0o444) // one user in the pod: it and the agent run as workerUID
	volumes := []corev1.Volume{
		{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: s.SecretName, DefaultMode: &secretMode}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if s.CacheClaim != "" {
		volumes = append(volumes, corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: s.CacheClaim}}})
	} else {
		volumes = append(volumes, corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	mounts := []corev1.VolumeMount{
		{Name: "secret", MountPath: podSecretDir, ReadOnly: true},
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "home", MountPath: podHome},
		{Name: "cache", MountPath: podEnvDir, SubPath: digestDir(s.EnvDigest), ReadOnly: true},
		{Name: "cache", MountPath: podRuntime, SubPath: digestDir(s.Runtime), ReadOnly: true},
		{Name: "cache", MountPath: podSDK, SubPath: digestDir(s.SDK), ReadOnly: true},
	}
	if s.DataClaim != "" {
		volumes = append(volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: s.DataClaim}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "data", MountPath: podData})
	}
	env := []corev1.EnvVar{
		{Name: "PATH", Value: podEnvDir + "/bin:/usr/local/bin:/usr/bin:/bin"},
		{Name: "VIRTUAL_ENV", Value: podEnvDir},
		{Name: "HOME", Value: podHome},
		{Name: "LANG", Value: "C.UTF-8"},
		{Name: "PYTHONUNBUFFERED", Value: "1"},
		{Name: "PYTHONDONTWRITEBYTECODE", Value: "1"},
	}
	if s.NestedAddr != "" && s.Worker.Token != "" {
		env = append(env,
			corev1.EnvVar{Name: "ATOLL_HOST", Value: s.NestedAddr},
			corev1.EnvVar{Name: "ATOLL_WORKER_TOKEN_FILE", Value: podSecretDir + "/" + tokenKey})
	}
	fetchArgs := []string{"worker", "fetch", "--url", s.ArchiveURL, "--credential-file", podSecretDir + "/" + fetchKey,
		"--cache", podCacheDir, s.EnvDigest, s.Runtime, s.SDK}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: s.labels()},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			DNSPolicy:                     corev1.DNSDefault,
			TerminationGracePeriodSeconds: &grace,
			ServiceAccountName:            s.ServiceAcct,
			NodeSelector:                  s.Type.NodeSelector,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &yes,
				RunAsUser:      &uid,
				RunAsGroup:     &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			InitContainers: []corev1.Container{{
				Name:                     fetchName,
				Image:                    s.Image,
				ImagePullPolicy:          s.PullPolicy,
				Command:                  []string{agentBinary},
				Args:                     fetchArgs,
				Resources:                res,
				SecurityContext:          restricted(),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts: []corev1.VolumeMount{
					{Name: "secret", MountPath: podSecretDir, ReadOnly: true},
					{Name: "cache", MountPath: podCacheDir},
				},
			}},
			Containers: []corev1.Container{{
				Name:                     workerName,
				Image:                    s.Image,
				ImagePullPolicy:          s.PullPolicy,
				Command:                  []string{agentBinary},
				Args:                     s.agentArgs(),
				Env:                      env,
				Resources:                res,
				SecurityContext:          restricted(),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts:             mounts,
			}},
			Volumes: volumes,
		},
	}
	if s.Type.RuntimeClass != "" {
		rc := s.Type.RuntimeClass
		p.Spec.RuntimeClassName = &rc
	}
	return p
}

// digestDir is the cache directory an archive unpacks to.
func digestDir(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

// networkPolicy denies worker pods every egress but the server's worker,
// archive and nested-call ports on the server's one address: the cloud
// metadata address (169.254.169.254) and everything else stay denied. Kubernetes stores it whatever the network
// plugin; only a plugin that enforces NetworkPolicy (Calico, Cilium...)
// makes it bind.
func networkPolicy(namespace, server, serverIP string, ports []int) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	var np []networkingv1.NetworkPolicyPort
	for _, p := range ports {
		port := intstr.FromInt32(int32(p))
		np = append(np, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
	}
	cidr := serverIP + "/32"
	if strings.Contains(serverIP, ":") {
		cidr = serverIP + "/128"
	}
	selector := map[string]string{LabelManagedBy: managedBy, LabelServer: labelValue(server), LabelComponent: componentWorker}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "atoll-workers-" + labelValue(server), Namespace: namespace, Labels: serverLabels(server)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selector},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     nil, // nothing dials a worker: it dials out
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr}}},
				Ports: np,
			}},
		},
	}
}
