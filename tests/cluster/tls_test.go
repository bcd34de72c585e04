//go:build !race

// Built without -race for the reason given in cluster_test.go.

package cluster_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/actors/transfer"
)

// writeCA writes a fresh CA certificate (its key stays in memory) and
// returns a function that issues 127.0.0.1 certificates it signs. Keys are
// generated at test time; none is checked in.
func writeCA(t *testing.T, dir, name string) func(string) *transfer.TLSFiles {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	caFile := filepath.Join(dir, name+"-ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	serial := int64(1)
	return func(who string) *transfer.TLSFiles {
		serial++
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: who}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		kd, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		f := &transfer.TLSFiles{CertFile: filepath.Join(dir, name+"-"+who+".pem"), KeyFile: filepath.Join(dir, name+"-"+who+"-key.pem"), CAFile: caFile}
		require.NoError(t, os.WriteFile(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
		require.NoError(t, os.WriteFile(f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600))
		return f
	}
}

// With mutual TLS, nodes started with --tls-cert/--tls-key/--tls-ca serve
// a client holding a certificate of their CA, and refuse one whose
// certificate another CA signed: its calls never reach a grain.
func TestClusterMutualTLS(t *testing.T) {
	dir := t.TempDir()
	issue := writeCA(t, dir, "cluster")
	rogue := writeCA(t, dir, "rogue")
	var addrs []string
	for range 2 {
		addrs = append(addrs, "127.0.0.1:"+itoa(freePort(t)))
	}
	var members []string
	for i, a := range addrs {
		f := issue("node" + itoa(i))
		startNode(t, a, "--members", join(addrs), "--tls-cert", f.CertFile, "--tls-key", f.KeyFile, "--tls-ca", f.CAFile)
		members = append(members, a)
	}
	good := newClientWith(t, cluster.Config{Members: members, TLS: issue("client")})
	matchesEmbedded(t, good)

	bad := newClientWith(t, cluster.Config{Members: members, TLS: rogue("client")})
	_, err := bad.NewCache("refused", mambaSpec(2))
	require.ErrorIs(t, err, cluster.ErrUnreachable)
}
