package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// issuer migrate's refusals before it touches anything (the copy itself is
// tested in issuer/migrate, against a real etcd).
func TestMigrateRefusals(t *testing.T) {
	t.Setenv(etcdEnv, "")
	empty := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"migrate", "--data", empty}, 2, "migrate needs --etcd ENDPOINTS"},
		{[]string{"migrate", "--data", empty, "--etcd", "http://127.0.0.1:1", "--etcd-cert", "c.pem"}, 2, "--etcd-cert and --etcd-key go together"},
		{[]string{"migrate", "--data", empty, "--etcd", "http://127.0.0.1:1", "--etcd-user", "root"}, 2, "--etcd-user and --etcd-password-file go together"},
		{[]string{"migrate", "--data", empty, "--etcd", "http://127.0.0.1:1", "extra"}, 2, `migrate takes no arguments, got "extra"`},
		{[]string{"migrate", "--data", empty, "--etcd", "http://127.0.0.1:1", "--prefix", "/no-slash"}, 2, "--prefix must end in '/'"},
		{[]string{"migrate", "--data", empty, "--etcd", "http://127.0.0.1:1", "--etcd-ca", "ca.pem"}, 2, "is plain HTTP, but --etcd-ca or --etcd-cert asks for TLS"},
		{[]string{"migrate", "--data", empty, "--etcd", "http://127.0.0.1:1"}, 1, "no issuer state in " + empty + ": nothing to migrate"},
		{[]string{"migrate", "--data", empty, "--kek", filepath.Join(empty, "kek"), "--etcd", "http://127.0.0.1:1"}, 1, "no issuer state in"},
	} {
		code, out, errOut := runIssuer(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("issuer %q: exit %d, stderr %q; want exit %d saying %q (stdout %q)", c.args, code, errOut, c.code, c.want, out)
		}
	}
	if code, out, _ := runIssuer(t, "migrate", "--help"); code != 0 || !strings.Contains(out, "Not copied: replay records") {
		t.Errorf("migrate --help: exit %d\n%s", code, out)
	}
}
