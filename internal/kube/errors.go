package kube

import "errors"

// ErrImagePull reports a worker image the node cannot get.
var ErrImagePull = errors.New("worker image cannot be pulled")

// ErrPodFailed reports a pod that ended, or was deleted, before its worker
// dialed back.
var ErrPodFailed = errors.New("worker pod failed")

// ErrArchive reports an environment archive that cannot be made, fetched
// or verified.
var ErrArchive = errors.New("environment archive")

// ErrInvalidConfig reports a launcher configuration that cannot work.
var ErrInvalidConfig = errors.New("invalid kubernetes launcher configuration")
