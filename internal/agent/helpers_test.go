package agent

import (
	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func cmpProto(a, b *atollv1.WorkerEvent) bool { return proto.Equal(a, b) }
