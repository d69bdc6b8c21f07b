package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// LocalVolumes makes PersistentVolumeClaims bound to local volumes: a
// directory on one node, for a server that shares the node with its workers
// (the single-node test cluster, a one-machine install). The claim is
// pre-bound to a PersistentVolume the launcher creates, which needs
// permission to create PersistentVolumes.
type LocalVolumes struct {
	Client    kubernetes.Interface
	Namespace string
	Server    string
	// Node is the node holding the directories.
	Node string
}

// Ensure makes claim name present in the namespace, bound to hostDir on the
// node. The directory must exist there. A volume whose earlier claim was
// deleted (it is then Released) is made anew over the same directory.
func (v LocalVolumes) Ensure(ctx context.Context, name, hostDir string, sizeBytes int64) error {
	pvName := "atoll-" + shortHash(v.Namespace+"/"+name) + "-" + name
	if len(pvName) > 253 {
		pvName = pvName[:253]
	}
	if sizeBytes <= 0 {
		sizeBytes = 1 << 40 // no quota: the claim's size means nothing to a local volume
	}
	size := *resource.NewQuantity(sizeBytes, resource.BinarySI)
	pvs := v.Client.CoreV1().PersistentVolumes()
	pv, err := pvs.Get(ctx, pvName, metav1.GetOptions{})
	switch {
	case err == nil && (pv.Status.Phase == corev1.VolumeReleased || pv.Status.Phase == corev1.VolumeFailed || pv.Spec.Local == nil || pv.Spec.Local.Path != hostDir):
		if err := pvs.Delete(ctx, pvName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replace volume %s: %w", pvName, err)
		}
		if err := v.awaitGone(ctx, pvName); err != nil {
			return err
		}
		fallthrough
	case apierrors.IsNotFound(err) || err == nil && pv == nil:
		pv = &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName, Labels: serverLabels(v.Server)},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "",
				PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: hostDir}},
				ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: v.Namespace, Name: name},
				NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{v.Node}}},
				}}}},
			},
		}
		if _, err := pvs.Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create volume %s: %w", pvName, err)
		}
	case err != nil:
		return fmt.Errorf("read volume %s: %w", pvName, err)
	}
	empty := ""
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: v.Namespace, Labels: serverLabels(v.Server)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &empty,
			VolumeName:       pvName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	claims := v.Client.CoreV1().PersistentVolumeClaims(v.Namespace)
	if _, err := claims.Create(ctx, pvc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create claim %s: %w", name, err)
	}
	// A pod of an unbound claim waits in the scheduler, which would count
	// against the queue timeout as if no node had room.
	for i := 0; ; i++ {
		got, err := claims.Get(ctx, name, metav1.GetOptions{})
		if err == nil && got.Status.Phase == corev1.ClaimBound {
			return nil
		}
		if i == 600 {
			return fmt.Errorf("claim %s is not bound to volume %s after a minute", name, pvName)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (v LocalVolumes) awaitGone(ctx context.Context, pvName string) error {
	for i := 0; i < 100; i++ {
		if _, err := v.Client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("volume %s was not gone 10 s after its deletion", pvName)
}

// dataClaimName is an account's /data claim: one per server and account
// (servers sharing a namespace keep apart), a valid object name whatever
// the account's characters.
func dataClaimName(server, account string) string {
	return "atoll-" + server + "-data-" + shortHash(account)
}

// CacheClaimName is the node archive cache's claim of a server.
func CacheClaimName(server string) string { return "atoll-" + server + "-envcache" }

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// LocalData gives each account's /data as a claim bound to its directory
// under the server's data directory, on the node the server shares.
type LocalData struct {
	Volumes LocalVolumes
	// Dir returns the account's directory (made, owned by the workers'
	// user).
	Dir func(account string) (string, error)
	// QuotaBytes sizes the claim (the quota itself binds in the directory).
	QuotaBytes int64
}

// Claim returns the account's claim, made if needed.
func (d LocalData) Claim(ctx context.Context, account string) (string, error) {
	dir, err := d.Dir(account)
	if err != nil {
		return "", err
	}
	name := dataClaimName(d.Volumes.Server, account)
	if err := d.Volumes.Ensure(ctx, name, dir, d.QuotaBytes); err != nil {
		return "", err
	}
	return name, nil
}

// ClassData gives each account's /data as a claim of a storage class: the
// design for a multi-node cluster, where the class provisions the volume
// (ReadWriteMany, so the account's pods on any node share it).
type ClassData struct {
	Client       kubernetes.Interface
	Namespace    string
	Server       string
	StorageClass string
	QuotaBytes   int64
}

// Claim returns the account's claim, made if needed.
func (d ClassData) Claim(ctx context.Context, account string) (string, error) {
	name := dataClaimName(d.Server, account)
	size := d.QuotaBytes
	if size <= 0 {
		size = 10 << 30
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.Namespace, Labels: serverLabels(d.Server)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			StorageClassName: &d.StorageClass,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
		},
	}
	if _, err := d.Client.CoreV1().PersistentVolumeClaims(d.Namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create claim %s: %w", name, err)
	}
	return name, nil
}

// PrepareCacheDir makes the node cache's directory on this host, writable by
// the workers' user (its init containers unpack into it).
func PrepareCacheDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.Chown(dir, workerUID, workerUID)
}
