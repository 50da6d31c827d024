package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	plat := runtime.GOOS + "/" + runtime.GOARCH
	cases := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"release build", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "97db3281aa"}, {Key: "vcs.time", Value: "2026-11-30T10:00:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			"issuer v1.2.0 revision 97db3281aa 2026-11-30T10:00:00Z go1.26.8 " + plat},
		{"modified checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261130100000-97db3281aa00+dirty"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "97db3281aa"}, {Key: "vcs.modified", Value: "true"}}},
			"issuer v0.0.0-20261130100000-97db3281aa00+dirty revision 97db3281aa (modified) go1.26.8 " + plat},
		{"no VCS stamp", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"issuer (devel) revision unknown go1.26.8 " + plat},
		{"no build info", nil, "issuer (unknown) revision unknown " + runtime.Version() + " " + plat},
	}
	for _, c := range cases {
		if got := Format("issuer", c.bi); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// A test binary has build information too: its module path is this one.
func TestStringReadsTheBinary(t *testing.T) {
	if got := String("verifier"); !strings.HasPrefix(got, "verifier ") || !strings.Contains(got, " revision ") {
		t.Fatalf("String = %q", got)
	}
}
