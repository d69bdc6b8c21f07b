package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// deleteTimeout bounds the wait for a deleted pod to be gone: a node that
// was lost never confirms.
const deleteTimeout = time.Minute

// podProcess is one worker pod, as the informer last saw it.
type podProcess struct {
	l        *Launcher
	name     string
	image    string
	secret   string
	expected *workerproto.Expected
	revoke   func()
	// spec, token and credential make the pod again when its node loses
	// its sandbox before the worker ran (see sandboxLost).
	spec       podSpec
	token      string
	credential string
	replaced   bool

	mu      sync.Mutex
	pod     *corev1.Pod
	deleted bool
	changed chan struct{} // closed and replaced at each change

	killOnce    sync.Once
	releaseOnce sync.Once
	waitOnce    sync.Once
	exit        scheduler.Exit
}

var _ scheduler.Process = (*podProcess)(nil)

func (p *podProcess) update(pod *corev1.Pod, deleted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		return
	}
	p.pod, p.deleted = pod, deleted
	close(p.changed)
	p.changed = make(chan struct{})
}

// currentName is the pod's name (a replaced pod has a new one).
func (p *podProcess) currentName() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.name
}

// state returns the pod as last seen, whether it is gone, and a channel
// closed at the next change.
func (p *podProcess) state() (*corev1.Pod, bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pod, p.deleted, p.changed
}

// awaitScheduled waits until the pod is bound to a node. A pod the
// Kubernetes scheduler keeps refusing for the queue timeout is deleted and
// reported as machine.ErrNoCapacity with the scheduler's words.
func (p *podProcess) awaitScheduled(ctx context.Context, t machine.Type) error {
	timeout := time.NewTimer(p.l.opts.QueueTimeout)
	defer timeout.Stop()
	var reason string
	for {
		pod, deleted, changed := p.state()
		if deleted {
			return fmt.Errorf("%w: pod %s was deleted before a node took it", ErrPodFailed, p.currentName())
		}
		if pod != nil {
			if pod.Spec.NodeName != "" {
				return nil
			}
			for _, c := range pod.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
					reason = c.Message
				}
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			if reason == "" {
				reason = "the Kubernetes scheduler placed it nowhere"
			}
			return fmt.Errorf("%w: no node took a pod of machine type %s within %s: %s",
				machine.ErrNoCapacity, t, p.l.opts.QueueTimeout, strings.TrimSpace(reason))
		}
	}
}

// Conn waits for the worker to dial back, failing early when the pod shows
// it never will: an image it cannot pull, an archive its init container
// could not fetch, a pod that ended or was deleted.
func (p *podProcess) Conn(ctx context.Context) (*workerproto.Conn, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var lostSince time.Time
		for {
			pod, deleted, changed := p.state()
			if err := p.startFailure(pod, deleted); err != nil {
				cancel(err)
				return
			}
			switch {
			case !sandboxLost(pod):
				lostSince = time.Time{}
			case lostSince.IsZero():
				lostSince = time.Now()
			case time.Since(lostSince) > sandboxLostGrace:
				if err := p.replace(ctx); err != nil {
					cancel(err)
					return
				}
				lostSince = time.Time{}
			}
			select {
			case <-changed:
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	rwc, err := p.expected.Wait(ctx)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
			return nil, cause
		}
		return nil, err
	}
	return workerproto.NewConn(rwc), nil
}

// sandboxLostGrace is how long a pod may sit with its init container done,
// its worker not started and no sandbox before it counts as lost.
const sandboxLostGrace = 5 * time.Second

// sandboxLost reports a pod whose node stopped its sandbox after the init
// container ran and will not make another (restartPolicy Never): it would
// wait in PodInitializing for ever. Seen with containerd 1.6 on the test
// cluster; no user code has run in such a pod.
func sandboxLost(pod *corev1.Pod) bool {
	if pod == nil || pod.DeletionTimestamp != nil || pod.Status.PodIP != "" || len(pod.Status.InitContainerStatuses) == 0 {
		return false
	}
	for _, s := range pod.Status.InitContainerStatuses {
		if t := s.State.Terminated; t == nil || t.ExitCode != 0 {
			return false
		}
	}
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == workerName && (s.State.Running != nil || s.State.Terminated != nil) {
			return false
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReadyToStartContainers && c.Status == corev1.ConditionFalse {
			return true
		}
	}
	return false
}

// replace deletes a pod whose sandbox was lost and makes it again under a
// new name, once: the worker's token and archive grant carry over.
func (p *podProcess) replace(ctx context.Context) error {
	p.mu.Lock()
	if p.replaced {
		p.mu.Unlock()
		return fmt.Errorf("%w: the node lost the sandbox of pod %s twice before the worker started", ErrPodFailed, p.currentName())
	}
	p.replaced = true
	old, oldSecret := p.name, p.secret
	p.spec.Name, p.spec.SecretName = p.spec.Name+"-r", p.spec.SecretName+"-r"
	p.name, p.secret = p.spec.Name, p.spec.SecretName
	p.pod, p.deleted = nil, false
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.l.log.Warn("the node lost a worker pod's sandbox before the worker started; making the pod again", "pod", old, "new", p.name)
	p.l.mu.Lock()
	delete(p.l.procs, old)
	p.l.procs[p.name] = p
	p.l.mu.Unlock()
	client := p.l.opts.Client.CoreV1()
	_ = client.Pods(p.l.opts.Namespace).Delete(context.WithoutCancel(ctx), old, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	_ = client.Secrets(p.l.opts.Namespace).Delete(context.WithoutCancel(ctx), oldSecret, metav1.DeleteOptions{})
	if err := p.l.create(ctx, p.spec, p.token, p.credential); err != nil {
		return fmt.Errorf("%w: make pod %s again: %w", ErrPodFailed, p.currentName(), err)
	}
	return nil
}

// imagePullReasons are the waiting reasons of a container whose image the
// node cannot get.
var imagePullReasons = map[string]bool{"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true}

// startFailure says why a pod will never dial back, or nil while it may.
func (p *podProcess) startFailure(pod *corev1.Pod, deleted bool) error {
	if deleted {
		return fmt.Errorf("%w: pod %s was deleted", ErrPodFailed, p.currentName())
	}
	if pod == nil {
		return nil
	}
	statuses := append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, s := range statuses {
		if w := s.State.Waiting; w != nil {
			if imagePullReasons[w.Reason] {
				return fmt.Errorf("%w: the node cannot get image %s (%s): %s", ErrImagePull, s.Image, w.Reason, w.Message)
			}
			if w.Reason == "CreateContainerConfigError" || w.Reason == "CreateContainerError" {
				return fmt.Errorf("%w: container %s of pod %s: %s: %s", ErrPodFailed, s.Name, p.name, w.Reason, w.Message)
			}
		}
		if t := s.State.Terminated; t != nil && (t.ExitCode != 0 || s.Name == workerName) {
			what := "the worker"
			if s.Name == fetchName {
				what = "fetching the environment"
			}
			return fmt.Errorf("%w: %s ended (%s, exit code %d) before dialing back: %s", ErrPodFailed, what, t.Reason, t.ExitCode, strings.TrimSpace(t.Message))
		}
	}
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return fmt.Errorf("%w: pod %s %s: %s", ErrPodFailed, p.currentName(), pod.Status.Phase, pod.Status.Message)
	}
	return nil
}

// Kill deletes the pod. The kubelet stops it within the pod's one-second
// grace period, long enough to report how it ended (an OOM kill).
func (p *podProcess) Kill() error {
	var err error
	p.killOnce.Do(func() {
		name := p.currentName()
		err = p.l.opts.Client.CoreV1().Pods(p.l.opts.Namespace).Delete(context.Background(), name,
			metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))})
		if apierrors.IsNotFound(err) {
			err = nil
		}
	})
	return err
}

// Wait blocks until the worker has ended, then deletes its pod and secret
// and waits until the pod is gone, its node's resources released.
func (p *podProcess) Wait() (scheduler.Exit, error) {
	var err error
	p.waitOnce.Do(func() {
		for {
			pod, deleted, changed := p.state()
			if exit, ended := podExit(pod, deleted); ended {
				p.exit = exit
				break
			}
			<-changed
		}
		err = p.Kill()
		timeout := time.After(deleteTimeout)
	gone:
		for {
			_, deleted, changed := p.state()
			if deleted {
				break
			}
			select {
			case <-changed:
			case <-timeout:
				err = errors.Join(err, fmt.Errorf("pod %s was not gone %s after its deletion", p.currentName(), deleteTimeout))
				break gone
			}
		}
		p.release()
	})
	return p.exit, err
}

// release forgets the pod and everything that admitted it.
func (p *podProcess) release() {
	p.releaseOnce.Do(func() {
		p.mu.Lock()
		name, secret := p.name, p.secret
		p.mu.Unlock()
		p.expected.Cancel()
		p.revoke()
		p.l.mu.Lock()
		delete(p.l.procs, name)
		p.l.mu.Unlock()
		err := p.l.opts.Client.CoreV1().Secrets(p.l.opts.Namespace).Delete(context.Background(), secret, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			p.l.log.Warn("cannot delete a worker's secret; its owner reference lets the garbage collector do it", "secret", secret, "err", err)
		}
	})
}

// podExit reports how the worker ended, once it has: its container's
// termination (an OOM kill included), or a kill when the pod went away
// without one.
func podExit(pod *corev1.Pod, deleted bool) (scheduler.Exit, bool) {
	if pod != nil {
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name != workerName || s.State.Terminated == nil {
				continue
			}
			t := s.State.Terminated
			exit := scheduler.Exit{Code: int(t.ExitCode), OOMKilled: t.Reason == "OOMKilled"}
			if t.ExitCode > 128 {
				exit.Code, exit.Signal = -1, int(t.ExitCode-128)
			}
			return exit, true
		}
		for _, s := range pod.Status.InitContainerStatuses {
			if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
				return scheduler.Exit{Code: int(t.ExitCode), OOMKilled: t.Reason == "OOMKilled"}, true
			}
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return scheduler.Exit{Code: -1, Signal: 9}, true
		}
	}
	if deleted {
		return scheduler.Exit{Code: -1, Signal: 9}, true
	}
	return scheduler.Exit{}, false
}
