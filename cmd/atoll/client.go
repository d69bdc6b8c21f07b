package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/serverapp"
)

// savedCredentials is the credentials file `atoll login` writes and the SDK
// reads: where the server is and the key to use there.
type savedCredentials struct {
	Host      string `json:"host"`
	KeyID     string `json:"key_id"`
	KeySecret string `json:"key_secret"`
	TLSCA     string `json:"tls_ca,omitempty"`
}

func credentialsPath() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "atoll", "credentials.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("locate the credentials file: %w", err)
	}
	return filepath.Join(home, ".config", "atoll", "credentials.json"), nil
}

func loadCredentials() (savedCredentials, error) {
	var c savedCredentials
	path, err := credentialsPath()
	if err != nil {
		return c, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return c, nil
}

// saveCredentials writes the file with mode 0600: it holds a secret.
func saveCredentials(c savedCredentials) (string, error) {
	path, err := credentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// clientFlags select the server a CLI command talks to.
type clientFlags struct {
	host string
}

// dial connects to the server named by --host, ATOLL_HOST, the credentials
// file, or the local default, and returns a context carrying the key from
// ATOLL_KEY_ID/ATOLL_KEY_SECRET or the credentials file.
func (f clientFlags) dial(ctx context.Context) (*grpc.ClientConn, context.Context, error) {
	saved, err := loadCredentials()
	if err != nil {
		return nil, nil, err
	}
	host := firstNonEmpty(f.host, os.Getenv("ATOLL_HOST"), saved.Host, serverapp.DefaultListen)
	keyID, secret := os.Getenv("ATOLL_KEY_ID"), os.Getenv("ATOLL_KEY_SECRET")
	if keyID == "" && (saved.Host == "" || saved.Host == host) {
		keyID, secret = saved.KeyID, saved.KeySecret
	}
	transport := insecure.NewCredentials()
	if ca := firstNonEmpty(os.Getenv("ATOLL_TLS_CA"), saved.TLSCA); ca != "" {
		if transport, err = credentials.NewClientTLSFromFile(ca, ""); err != nil {
			return nil, nil, fmt.Errorf("TLS CA %s: %w", ca, err)
		}
	}
	conn, err := grpc.NewClient(host, grpc.WithTransportCredentials(transport))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", host, err)
	}
	if keyID != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, auth.MetadataKeyID, keyID, auth.MetadataKeySecret, secret)
	}
	return conn, ctx, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// hostFlagHelp describes every command's --host.
const hostFlagHelp = "server address (default: ATOLL_HOST, the credentials file, or the local server)"

// withAdmin dials the server and runs fn with an Admin client; gRPC errors
// come back as messages for people.
func (f clientFlags) withAdmin(cmd *cobra.Command, fn func(ctx context.Context, admin atollv1.AdminClient, target string) error) error {
	conn, ctx, err := f.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := fn(ctx, atollv1.NewAdminClient(conn), conn.Target()); err != nil {
		return rpcError(err)
	}
	return nil
}
