package agent

import (
	"embed"
	"os"
)

//go:embed guest/banger-agent.service guest/99-banger-agent.rules
var guestFS embed.FS

// GuestFile is a file the image builder writes into every image.
type GuestFile struct {
	Path string
	Mode os.FileMode
	Data []byte
}

// AgentPath is where the image builder installs the banger-agent binary.
const AgentPath = "/usr/local/bin/banger-agent"

// GuestFiles returns the systemd unit and udev rule that start the agent when
// its channel device (virtio-serial port org.banger.agent, or /dev/vsock)
// appears. The agent binary itself goes to AgentPath.
func GuestFiles() []GuestFile {
	files := []struct{ src, dst string }{
		{"guest/banger-agent.service", "/usr/lib/systemd/system/banger-agent.service"},
		{"guest/99-banger-agent.rules", "/usr/lib/udev/rules.d/99-banger-agent.rules"},
	}
	out := make([]GuestFile, 0, len(files))
	for _, f := range files {
		data, err := guestFS.ReadFile(f.src)
		if err != nil {
			panic("agent: embedded guest file missing: " + f.src) // a build error, not a runtime one
		}
		out = append(out, GuestFile{Path: f.dst, Mode: 0o644, Data: data})
	}
	return out
}
