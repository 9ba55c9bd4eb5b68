// Package buildinfo holds the build's version, set at link time:
//
//	go build -ldflags "-X banger/internal/buildinfo.Version=v0.1.0 -X banger/internal/buildinfo.Commit=abc123"
package buildinfo

// Version is the release version ("dev" for an unstamped build).
var Version = "dev"

// Commit is the VCS commit the build came from ("" when unstamped).
var Commit = ""

// String returns "Version (Commit)" or just Version.
func String() string {
	if Commit == "" {
		return Version
	}
	return Version + " (" + Commit + ")"
}
