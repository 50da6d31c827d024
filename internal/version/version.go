// Package version says which build a program is, from the build
// information Go stamps into every binary: the module version and, when
// built from a checkout (make dist does), the VCS revision.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// String is the line "PROGRAM --version" prints.
func String(program string) string {
	bi, _ := debug.ReadBuildInfo()
	return Format(program, bi)
}

// Format is String for given build information (nil when the binary has
// none).
func Format(program string, bi *debug.BuildInfo) string {
	ver, rev, at, modified := "(unknown)", "unknown", "", false
	goVer := runtime.Version()
	if bi != nil {
		if bi.Main.Version != "" {
			ver = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVer = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if at != "" {
		rev += " " + at
	}
	if modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("%s %s revision %s %s %s/%s", program, ver, rev, goVer, runtime.GOOS, runtime.GOARCH)
}
