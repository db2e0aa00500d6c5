package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/tariq-vpn/tariq/config"
)

// OptionsFrom returns the options server.etcd describes, with the TLS
// files read: the node name (server.node_name or the host name), the
// endpoints, the prefix, and the data directory for the cache.
func OptionsFrom(cfg *config.Config) (Options, error) {
	node, err := cfg.NodeName()
	if err != nil {
		return Options{}, err
	}
	e := cfg.Server.Etcd
	opts := Options{Endpoints: e.Endpoints, Prefix: e.Prefix, Node: node, DataDir: cfg.Server.DataDir}
	if e.CAFile == "" && e.CertFile == "" {
		for _, ep := range e.Endpoints {
			if len(ep) > 8 && ep[:8] == "https://" {
				opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12} // the system's roots
				break
			}
		}
		return opts, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		b, err := os.ReadFile(e.CAFile)
		if err != nil {
			return Options{}, fmt.Errorf("server.etcd.ca_file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(b) {
			return Options{}, fmt.Errorf("server.etcd.ca_file: no PEM certificate in %s", e.CAFile)
		}
	}
	if e.CertFile != "" {
		c, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return Options{}, fmt.Errorf("server.etcd.cert_file, key_file: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	opts.TLS = t
	return opts, nil
}
