package ext4

import (
	"context"
	"errors"
	"fmt"
	"time"

	"banger/internal/sandbox"
)

// toolTimeout bounds one sandboxed tool run (a check of a large image).
const toolTimeout = 10 * time.Minute

// toolOutputMax caps a tool's output kept in memory.
const toolOutputMax = 1 << 20

// toolMemory caps a tool's address space: a crafted filesystem must not
// make e2fsck take the host's memory.
const toolMemory = 8 << 30

// configFiles are the host files the tools read (read-only in the sandbox).
var configFiles = []string{"/etc/mke2fs.conf", "/etc/e2fsck.conf"}

// toolCmd is the sandboxed command for an e2fsprogs command line.
func toolCmd(args []string) sandbox.Cmd {
	return sandbox.Cmd{Args: args, ROBinds: configFiles, Timeout: toolTimeout, MaxOutput: toolOutputMax, MaxMemory: toolMemory}
}

// session is one scratch dir of the default sandbox.
type session struct {
	sb *sandbox.Sandbox
	sc *sandbox.Scratch
	n  int // command files written
	// maxFile caps each file a debugfs run writes (0 = none).
	maxFile int64
}

func newSession() (*session, error) {
	sb, err := sandbox.Default()
	if err != nil {
		return nil, err
	}
	sc, err := sandbox.NewScratch(sb)
	if err != nil {
		return nil, err
	}
	return &session{sb: sb, sc: sc}, nil
}

// run runs an e2fsprogs command line in the session's sandbox.
func (s *session) run(ctx context.Context, args ...string) ([]byte, error) {
	return s.sb.Run(ctx, s.sc, toolCmd(args))
}

// close ends the session; an error giving a passed file back its owner is
// joined to err.
func (s *session) close(err *error) {
	if cerr := s.sc.Close(); cerr != nil {
		*err = errors.Join(*err, cerr)
	}
}

// onImage runs one tool in the sandbox on the image at img (passed as a
// descriptor, read-write when write is set); args makes its command line
// from the path the tool names the image by.
func onImage(ctx context.Context, img string, write bool, args func(p string) []string) (out []byte, err error) {
	s, err := newSession()
	if err != nil {
		return nil, err
	}
	defer s.close(&err)
	p, err := s.sc.Pass(img, write)
	if err != nil {
		return nil, err
	}
	out, err = s.run(ctx, args(p)...)
	if err != nil {
		return out, fmt.Errorf("%w (sandboxed)", err)
	}
	return out, nil
}
