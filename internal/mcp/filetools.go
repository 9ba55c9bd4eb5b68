package mcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/files"
)

// maxRead bounds read_file.
const maxRead = 1 << 20

type readIn struct {
	VM       string `json:"vm" jsonschema:"the VM's name"`
	Path     string `json:"path" jsonschema:"file path in the guest; relative paths are under /root"`
	MaxBytes int    `json:"max_bytes,omitempty" jsonschema:"read at most this many bytes (default and limit 1 MiB)"`
}

type readOut struct {
	Content   string `json:"content"`
	Encoding  string `json:"encoding"` // "utf-8" or "base64" (binary files)
	Truncated bool   `json:"truncated,omitempty"`
}

type writeIn struct {
	VM      string `json:"vm" jsonschema:"the VM's name"`
	Path    string `json:"path" jsonschema:"file path in the guest; relative paths are under /root; missing directories are made"`
	Content string `json:"content" jsonschema:"the file's new content (text)"`
	Mode    string `json:"mode,omitempty" jsonschema:"octal permissions such as 755; 644 when empty"`
}

type writeOut struct {
	Bytes int `json:"bytes"`
}

type listIn struct {
	VM   string `json:"vm" jsonschema:"the VM's name"`
	Path string `json:"path,omitempty" jsonschema:"directory in the guest; /root when empty"`
}

// Entry is one list_files entry.
type Entry struct {
	Name string `json:"name"`
	Type string `json:"type"` // file, dir, symlink, other
	Mode string `json:"mode"`
	Size int64  `json:"size"`
}

type listOut struct {
	Entries []Entry `json:"entries"`
}

type copyIn struct {
	VM        string `json:"vm" jsonschema:"the VM's name"`
	HostPath  string `json:"host_path" jsonschema:"absolute path on the host (the machine running banger)"`
	GuestPath string `json:"guest_path" jsonschema:"path in the guest; relative paths are under /root"`
}

func (s *Server) addFileTools(srv *sdk.Server) {
	sdk.AddTool(srv, &sdk.Tool{Name: "read_file",
		Description: "Read a file inside a VM. Text comes back as is; binary content as base64 (encoding says which). " +
			"At most 1 MiB; truncated says when there was more.",
	}, s.readFile)
	sdk.AddTool(srv, &sdk.Tool{Name: "write_file",
		Description: "Create or overwrite a text file inside a VM (parent directories are created). For many files or " +
			"binaries from the host, use copy_in.",
	}, s.writeFile)
	sdk.AddTool(srv, &sdk.Tool{Name: "list_files",
		Description: "List a directory inside a VM: name, type (file, dir, symlink, other), octal mode and size of each entry.",
	}, s.listFiles)
	sdk.AddTool(srv, &sdk.Tool{Name: "copy_in",
		Description: "Copy a file or directory tree from the host into a VM (modes and symlinks kept). Into an existing " +
			"guest directory it keeps its name; otherwise guest_path is the new name.",
	}, s.copyIn)
	sdk.AddTool(srv, &sdk.Tool{Name: "copy_out",
		Description: "Copy a file or directory tree from a VM to the host. Into an existing host directory it keeps its " +
			"name; otherwise host_path is the new name. Never writes outside host_path; devices and setuid bits are dropped.",
	}, s.copyOut)
}

// run runs argv in the guest and returns stdout (bounded by limit+1) or an
// error carrying the guest's stderr when the exit code is not 0.
func (s *Server) run(ctx context.Context, vm string, argv []string, stdin []byte, limit int) ([]byte, error) {
	if err := needVM(vm); err != nil {
		return nil, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := c.Exec(ctx, vm)
	if err != nil {
		return nil, err
	}
	out, stderr := newCapped(limit+1), newCapped(4096)
	var code int
	if stdin != nil {
		code, err = agent.Exec(ctx, conn, api.ExecRequest{Argv: argv, Dir: "/root"}, bytes.NewReader(stdin), out, stderr)
	} else {
		code, err = agent.Exec(ctx, conn, api.ExecRequest{Argv: argv, Dir: "/root"}, nil, out, stderr)
	}
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("in vm %s: %s (exit %d)", vm, strings.TrimSpace(stderr.String()), code)
	}
	return out.buf.Bytes(), nil
}

func (s *Server) readFile(ctx context.Context, _ *sdk.CallToolRequest, in readIn) (*sdk.CallToolResult, readOut, error) {
	limit := maxRead
	if in.MaxBytes > 0 && in.MaxBytes < limit {
		limit = in.MaxBytes
	}
	if in.Path == "" {
		return nil, readOut{}, api.Invalid("the \"path\" argument is empty")
	}
	b, err := s.run(ctx, in.VM, []string{"sh", "-c", `test -f "$1" || { echo "$1: not a regular file (or missing)" >&2; exit 1; }; head -c "$2" -- "$1"`,
		"sh", in.Path, strconv.Itoa(limit + 1)}, nil, limit)
	if err != nil {
		return nil, readOut{}, err
	}
	out := readOut{Encoding: "utf-8"}
	if len(b) > limit {
		b, out.Truncated = b[:limit], true
	}
	if utf8.Valid(b) {
		out.Content = string(b)
	} else {
		out.Content, out.Encoding = base64.StdEncoding.EncodeToString(b), "base64"
	}
	return nil, out, nil
}

func (s *Server) writeFile(ctx context.Context, _ *sdk.CallToolRequest, in writeIn) (*sdk.CallToolResult, writeOut, error) {
	mode := in.Mode
	if mode == "" {
		mode = "644"
	}
	if m, err := strconv.ParseUint(mode, 8, 32); err != nil || m > 0o7777 {
		return nil, writeOut{}, api.Invalid("mode %q is not octal permissions like 644", in.Mode)
	}
	if in.Path == "" {
		return nil, writeOut{}, api.Invalid("the \"path\" argument is empty")
	}
	script := `mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" -- "$1"`
	if _, err := s.run(ctx, in.VM, []string{"sh", "-c", script, "sh", in.Path, mode}, []byte(in.Content), 0); err != nil {
		return nil, writeOut{}, err
	}
	return nil, writeOut{Bytes: len(in.Content)}, nil
}

func (s *Server) listFiles(ctx context.Context, _ *sdk.CallToolRequest, in listIn) (*sdk.CallToolResult, listOut, error) {
	p := in.Path
	if p == "" {
		p = "/root"
	}
	b, err := s.run(ctx, in.VM, []string{"find", p, "-mindepth", "1", "-maxdepth", "1", "-printf", `%y\t%m\t%s\t%f\0`}, nil, maxRead)
	if err != nil {
		return nil, listOut{}, err
	}
	out := listOut{Entries: []Entry{}}
	for _, rec := range strings.Split(string(b), "\x00") {
		f := strings.SplitN(rec, "\t", 4)
		if len(f) != 4 {
			continue
		}
		size, _ := strconv.ParseInt(f[2], 10, 64)
		typ := map[string]string{"f": "file", "d": "dir", "l": "symlink"}[f[0]]
		if typ == "" {
			typ = "other"
		}
		out.Entries = append(out.Entries, Entry{Name: strings.ToValidUTF8(f[3], "\uFFFD"), Type: typ, Mode: f[1], Size: size})
	}
	return nil, out, nil
}

func (s *Server) copyIn(ctx context.Context, _ *sdk.CallToolRequest, in copyIn) (*sdk.CallToolResult, files.Stats, error) {
	if err := needVM(in.VM); err != nil {
		return nil, files.Stats{}, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, files.Stats{}, err
	}
	st, err := files.CopyIn(ctx, s.dialer(c, in.VM), in.HostPath, in.GuestPath)
	return nil, st, err
}

func (s *Server) copyOut(ctx context.Context, _ *sdk.CallToolRequest, in copyIn) (*sdk.CallToolResult, files.Stats, error) {
	if err := needVM(in.VM); err != nil {
		return nil, files.Stats{}, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, files.Stats{}, err
	}
	st, err := files.CopyOut(ctx, s.dialer(c, in.VM), in.GuestPath, in.HostPath, files.DefaultLimits)
	return nil, st, err
}
