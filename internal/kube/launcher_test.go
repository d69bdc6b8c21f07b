package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

const testNS = "atoll-test"

// fakeEnvs is an environment builder whose environments are directories
// made by the test.
type fakeEnvs struct{ root string }

func (f fakeEnvs) Ensure(_ context.Context, spec envbuild.Spec, _ func(string)) (envbuild.Env, error) {
	dir := filepath.Join(f.root, "venv-"+spec.Python)
	if err := os.MkdirAll(filepath.Join(dir, "lib", "python"+spec.Python, "site-packages"), 0o755); err != nil {
		return envbuild.Env{}, err
	}
	err := os.WriteFile(filepath.Join(dir, "lib", "python"+spec.Python, "site-packages", "mod.py"), []byte("X = 1\n"), 0o644)
	return envbuild.Env{Key: "k-" + spec.Python, Dir: dir, Python: filepath.Join(dir, "bin", "python")}, err
}

func (f fakeEnvs) Runtime(context.Context, string, func(string)) (string, error) {
	dir := filepath.Join(f.root, "runtime")
	return dir, os.MkdirAll(dir, 0o755)
}

type harness struct {
	client *fake.Clientset
	l      *Launcher
}

func newNode(name string, cpu, memory string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)}},
	}
}

func newHarness(t *testing.T, objects ...runtime.Object) *harness {
	t.Helper()
	client := fake.NewSimpleClientset(objects...)
	root := t.TempDir()
	sdk := filepath.Join(root, "sdk")
	if err := os.MkdirAll(filepath.Join(sdk, "atoll"), 0o755); err != nil {
		t.Fatal(err)
	}
	archives, err := NewArchives(filepath.Join(root, "archives"))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dial := workerproto.NewListener(lis, nil)
	go dial.Serve()
	t.Cleanup(func() { dial.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := New(ctx, Options{
		Client: client, Namespace: testNS, Server: "srv", Image: "localhost/atoll-worker:test", PullPolicy: corev1.PullNever,
		Pythons: []string{"3.11"}, Environments: fakeEnvs{root: root}, SDKDir: sdk,
		Archives: archives, ArchiveServer: NewArchiveServer(archives), ArchiveURL: "http://10.0.0.1:3",
		DialBack: dial, DialAddr: "10.0.0.1:1", NestedAddr: "10.0.0.1:2", QueueTimeout: 300 * time.Millisecond,
		Types: map[string]TypeConfig{"GPU-T4": {NodeSelector: map[string]string{"gpu": "t4"}, RuntimeClass: "gvisor"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return &harness{client: client, l: l}
}

var typeS = machine.Type{Name: "S", CPUs: 0.5, MemoryBytes: 1 << 30}

func spec(id string, t machine.Type) scheduler.WorkerSpec {
	return scheduler.WorkerSpec{ID: id, Account: "alice@example.com", Machine: t, Token: "tok-" + id,
		Environment: scheduler.Environment{Key: "0123456789abcdef0123", Python: "3.11"}}
}

// kubelet plays the node's part for one pod: it applies change to it (it
// runs in its own goroutine, so it reports with Error, never Fatal).
func (h *harness) kubelet(t *testing.T, name string, change func(*corev1.Pod)) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(5 * time.Second); ; {
		pod, err := h.client.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			change(pod)
			if _, err := h.client.CoreV1().Pods(testNS).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
				t.Error(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("pod %s never appeared: %v", name, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bind(p *corev1.Pod) { p.Spec.NodeName = "node-a" }

func TestStartCreatesRestrictedPodAndSecret(t *testing.T) {
	h := newHarness(t, newNode("node-a", "2", "4Gi"))
	go h.kubelet(t, "atoll-w-1", bind)
	proc, err := h.l.Start(context.Background(), spec("w-1", typeS))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pod, err := h.client.CoreV1().Pods(testNS).Get(ctx, "atoll-w-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		LabelManagedBy: "atoll", LabelComponent: "worker", LabelServer: "srv", LabelAccount: labelValue("alice@example.com"),
		LabelEnvironment: "0123456789abcdef", LabelWorker: "w-1", LabelMachineType: "S",
	}
	if diff := cmp.Diff(wantLabels, pod.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(pod.Labels[LabelAccount], "alice-example.com-") {
		t.Errorf("account label %q does not keep the readable part of the account", pod.Labels[LabelAccount])
	}
	// The restricted profile, as the API server's admission checks it.
	eval, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range eval.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}, &pod.ObjectMeta, &pod.Spec) {
		if !r.Allowed {
			t.Errorf("restricted profile refuses the pod: %s: %s", r.ForbiddenReason, r.ForbiddenDetail)
		}
	}
	if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("the pod mounts a service account token")
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		want := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}
		if !equalResources(c.Resources.Requests, want) || !equalResources(c.Resources.Limits, want) {
			t.Errorf("container %s: requests %v limits %v, want both %v", c.Name, c.Resources.Requests, c.Resources.Limits, want)
		}
		for _, e := range c.Env {
			if strings.Contains(e.Value, "tok-w-1") {
				t.Errorf("container %s has the token in variable %s", c.Name, e.Name)
			}
		}
		if c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("container %s: pull policy %s", c.Name, c.ImagePullPolicy)
		}
	}
	secret, err := h.client.CoreV1().Secrets(testNS).Get(ctx, "atoll-w-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(secret.Data[tokenKey]) != "tok-w-1" || len(secret.Data[fetchKey]) == 0 {
		t.Errorf("secret data %v: want the token and an archive credential", secret.Data)
	}
	if pol, err := h.client.NetworkingV1().NetworkPolicies(testNS).Get(ctx, "atoll-workers-srv", metav1.GetOptions{}); err != nil {
		t.Errorf("no NetworkPolicy: %v", err)
	} else if len(pol.Spec.Egress) != 1 || pol.Spec.Egress[0].To[0].IPBlock.CIDR != "10.0.0.1/32" || len(pol.Spec.Egress[0].Ports) != 3 {
		t.Errorf("egress %+v: want the server's address and its three ports only", pol.Spec.Egress)
	}

	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	exit, err := proc.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if exit.Signal != 9 {
		t.Errorf("exit %+v after deletion: want a kill", exit)
	}
	if _, err := h.client.CoreV1().Secrets(testNS).Get(ctx, "atoll-w-1", metav1.GetOptions{}); err == nil {
		t.Error("the worker's secret outlived it")
	}
}

func equalResources(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if q, ok := a[k]; !ok || q.Cmp(v) != 0 {
			return false
		}
	}
	return true
}

func TestGPUTypeRequestsGPUsOnSelectedNodes(t *testing.T) {
	gpuNode := newNode("gpu-a", "8", "64Gi")
	gpuNode.Labels["gpu"] = "t4"
	gpuNode.Status.Allocatable["nvidia.com/gpu"] = resource.MustParse("1")
	h := newHarness(t, gpuNode)
	gpu := machine.Type{Name: "GPU-T4", CPUs: 4, MemoryBytes: 26 << 30, GPUs: 1, GPUModel: "T4"}
	go h.kubelet(t, "atoll-w-gpu", bind)
	proc, err := h.l.Start(context.Background(), spec("w-gpu", gpu))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proc.Kill(); proc.Wait() }()
	pod, _ := h.client.CoreV1().Pods(testNS).Get(context.Background(), "atoll-w-gpu", metav1.GetOptions{})
	if q := pod.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 {
		t.Errorf("gpu limit %v, want 1", q.String())
	}
	if pod.Spec.NodeSelector["gpu"] != "t4" || pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName != "gvisor" {
		t.Errorf("node selector %v runtime class %v: want the type's configuration", pod.Spec.NodeSelector, pod.Spec.RuntimeClassName)
	}
}

func TestStartFailures(t *testing.T) {
	h := newHarness(t, newNode("node-a", "2", "4Gi"))
	t.Run("python the image lacks", func(t *testing.T) {
		s := spec("w-py", typeS)
		s.Environment.Python = "3.12"
		_, err := h.l.Start(context.Background(), s)
		var pu *envbuild.PythonUnavailableError
		if !errors.As(err, &pu) || pu.Available[0] != "3.11" {
			t.Fatalf("err %v: want PythonUnavailableError naming 3.11", err)
		}
	})
	t.Run("type no node fits", func(t *testing.T) {
		_, err := h.l.Start(context.Background(), spec("w-big", machine.Type{Name: "XL", CPUs: 8, MemoryBytes: 128 << 30}))
		if !errors.Is(err, machine.ErrNeverFits) || !strings.Contains(err.Error(), "node-a: 2 CPU") {
			t.Fatalf("err %v: want ErrNeverFits naming the node's resources", err)
		}
		if pods, _ := h.client.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
			t.Errorf("%d pods created for a type no node fits", len(pods.Items))
		}
	})
	t.Run("unschedulable", func(t *testing.T) {
		go h.kubelet(t, "atoll-w-wait", func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: "Unschedulable", Message: "0/1 nodes are available: 1 Insufficient memory."}}
		})
		_, err := h.l.Start(context.Background(), spec("w-wait", typeS))
		if !errors.Is(err, machine.ErrNoCapacity) || !strings.Contains(err.Error(), "0/1 nodes are available: 1 Insufficient memory.") {
			t.Fatalf("err %v: want ErrNoCapacity with the scheduler's reason", err)
		}
		awaitGone(t, h, "atoll-w-wait")
	})
}

func awaitGone(t *testing.T, h *harness, name string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := h.client.CoreV1().Pods(testNS).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			return
		}
	}
	t.Errorf("pod %s was not deleted", name)
}

func TestPodStates(t *testing.T) {
	tests := []struct {
		name     string
		status   func(*corev1.Pod)
		connErr  error
		inErr    string
		wantExit scheduler.Exit
	}{
		{
			name: "image pull failure names the image",
			status: func(p *corev1.Pod) {
				p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: fetchName, Image: "localhost/atoll-worker:test",
					State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: "image not present with pull policy of Never"}}}}
			},
			connErr: ErrImagePull, inErr: "localhost/atoll-worker:test", wantExit: scheduler.Exit{Code: -1, Signal: 9},
		},
		{
			name: "OOM kill",
			status: func(p *corev1.Pod) {
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: workerName,
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}}}}
			},
			connErr: ErrPodFailed, inErr: "OOMKilled", wantExit: scheduler.Exit{Code: -1, Signal: 9, OOMKilled: true},
		},
		{
			name: "archive fetch failure",
			status: func(p *corev1.Pod) {
				p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: fetchName,
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 1, Message: "hash mismatch"}}}}
			},
			connErr: ErrPodFailed, inErr: "fetching the environment", wantExit: scheduler.Exit{Code: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, newNode("node-a", "2", "4Gi"))
			go h.kubelet(t, "atoll-w-s", bind)
			proc, err := h.l.Start(context.Background(), spec("w-s", typeS))
			if err != nil {
				t.Fatal(err)
			}
			h.kubelet(t, "atoll-w-s", tt.status)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = proc.Conn(ctx)
			if !errors.Is(err, tt.connErr) || !strings.Contains(err.Error(), tt.inErr) {
				t.Fatalf("Conn: %v, want %v mentioning %q", err, tt.connErr, tt.inErr)
			}
			proc.Kill()
			exit, err := proc.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if exit != tt.wantExit {
				t.Errorf("exit %+v, want %+v", exit, tt.wantExit)
			}
		})
	}
}

func TestNewDeletesOnlyItsOwnLeftovers(t *testing.T) {
	pod := func(name, server string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: map[string]string{LabelManagedBy: "atoll", LabelServer: server}}}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "atoll-w-old", Namespace: testNS, Labels: map[string]string{LabelManagedBy: "atoll", LabelServer: "srv"}}}
	h := newHarness(t, pod("atoll-w-old", "srv"), pod("atoll-w-other", "other"), secret)
	pods, err := h.client.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"atoll-w-other"}, names); diff != "" {
		t.Errorf("pods left (-want +got):\n%s", diff)
	}
	if _, err := h.client.CoreV1().Secrets(testNS).Get(context.Background(), "atoll-w-old", metav1.GetOptions{}); err == nil {
		t.Error("the previous run's secret is still there")
	}
}

func TestLabelValue(t *testing.T) {
	for _, in := range []string{"alice", "alice@example.com", strings.Repeat("x", 80), "@@@", ""} {
		got := labelValue(in)
		if len(got) > 63 || !validLabel.MatchString(got) {
			t.Errorf("labelValue(%q) = %q: not a valid label value", in, got)
		}
	}
	if labelValue("a@b") == labelValue("a#b") {
		t.Error("different accounts got one label value")
	}
}

func TestPodWhoseSandboxWasLostIsMadeAgain(t *testing.T) {
	h := newHarness(t, newNode("node-a", "2", "4Gi"))
	go h.kubelet(t, "atoll-w-lost", bind)
	proc, err := h.l.Start(context.Background(), spec("w-lost", typeS))
	if err != nil {
		t.Fatal(err)
	}
	h.kubelet(t, "atoll-w-lost", func(p *corev1.Pod) {
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: fetchName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: workerName,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go proc.Conn(ctx)
	for {
		if _, err := h.client.CoreV1().Pods(testNS).Get(ctx, "atoll-w-lost-r", metav1.GetOptions{}); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the pod was not made again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	awaitGone(t, h, "atoll-w-lost")
	if s, err := h.client.CoreV1().Secrets(testNS).Get(ctx, "atoll-w-lost-r", metav1.GetOptions{}); err != nil || string(s.Data[tokenKey]) != "tok-w-lost" {
		t.Errorf("the new pod's secret: %v, %v: want the same token", s, err)
	}
	cancel()
	proc.Kill()
	if _, err := proc.Wait(); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, h, "atoll-w-lost-r")
}

func TestAPodsAgentPreloadsCloudpickleWhenTheFunctionNeedsIt(t *testing.T) {
	h := newHarness(t, newNode("node-a", "2", "4Gi"))
	for i, preload := range []bool{false, true} {
		id := fmt.Sprintf("w-%d", i)
		go h.kubelet(t, "atoll-"+id, bind)
		s := spec(id, typeS)
		s.PreloadCloudpickle = preload
		proc, err := h.l.Start(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		pod, err := h.client.CoreV1().Pods(testNS).Get(context.Background(), "atoll-"+id, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(pod.Spec.Containers[0].Args, "--preload-cloudpickle"); got != preload {
			t.Errorf("PreloadCloudpickle %v: agent args %q", preload, pod.Spec.Containers[0].Args)
		}
		proc.Kill()
	}
}
