package feature

import (
	_ "embed"
	"time"
)

//go:embed opencode.sh
var opencodeScript []byte

// Opencode is the opencode server (the AI coding agent's), on port 4096:
// opencode.sh installs Node.js, opencode-ai from npm, a launcher that picks
// the build the CPU can run, and opencode.service, which starts once the
// daemon has put the VM's password in /run/banger/opencode.env.
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
	// opencode serve checks HTTP basic auth on every route (but CORS
	// preflights) once OPENCODE_SERVER_PASSWORD is set; the user is
	// OPENCODE_SERVER_USERNAME, "opencode" when unset. opencode.sh's unit
	// reads EnvFile.
	Auth: &Auth{
		User:        "opencode",
		PasswordEnv: "OPENCODE_SERVER_PASSWORD",
		EnvFile:     "/run/banger/opencode.env",
		Unit:        "opencode.service",
	},
}
