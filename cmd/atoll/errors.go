package main

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rpcError turns a gRPC error into a message for people.
func rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if st.Code() == codes.Unavailable {
		return fmt.Errorf("could not reach the atoll server: %s; start one with `atoll server`, or set ATOLL_HOST", st.Message())
	}
	return fmt.Errorf("%s", st.Message())
}
