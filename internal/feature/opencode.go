package feature

import (
	_ "embed"
	"time"
)

//go:embed opencode.sh
var opencodeScript []byte

// Opencode is the opencode server (the AI coding agent's), on port 4096:
// opencode.sh installs Node.js, opencode-ai from npm, a launcher that picks
// the build the CPU can run, and opencode.service.
var Opencode = Descriptor{
	Name:      "opencode",
	Script:    opencodeScript,
	ScriptFix: "check that https://registry.npmjs.org is reachable from this host, or build without --with opencode",
	Marker:    "/etc/systemd/system/opencode.service",
	NPM:       []string{"opencode-ai"},
	NPMCheck:  []string{"opencode", "--version"},
	Port:      4096,
	// The health route answers without setting up a project (which needs
	// the internet).
	Path:  "/global/health",
	Stage: "opencode ready",
	// Its first start under software emulation takes a while.
	MinWait: 5 * time.Minute,
}
