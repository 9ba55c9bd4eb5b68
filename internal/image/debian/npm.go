package debian

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/feature"
	"banger/internal/sandbox"
)

// npmTimeout bounds one sandboxed npm install.
const npmTimeout = 15 * time.Minute

// npmLimits bound what an npm install may put into the image.
var npmLimits = sandbox.TreeLimits{Bytes: 2 << 30, Entries: 200_000}

// npmInstall installs d.NPM globally into the staging tree's /usr/local
// without running any of it as root on the host: npm (the tree's own,
// which the script's deps step installed) runs in the sandbox — an
// unprivileged uid, no capabilities, the tree's /usr, /etc and /var
// read-only, the host's network (the registry) and its CA bundle for a
// TLS-inspecting proxy — with `--prefix /scratch/out`, its install scripts
// included; d.NPMCheck runs there too. The host then copies /scratch/out
// into /usr/local: regular files root's without setuid, links recreated,
// never followed.
func (bd *makeRun) npmInstall(ctx context.Context, d feature.Descriptor) (err error) {
	sb, err := sandbox.Default()
	if err != nil {
		return err
	}
	sc, err := sandbox.NewScratch(sb)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := sc.Close(); err == nil {
			err = cerr
		}
	}()
	env := []string{"HOME=/scratch/home", "npm_config_cache=/scratch/cache", "LANG=C.UTF-8"}
	for _, k := range proxyVars {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if ca, err := os.ReadFile(feature.HostCABundle); err == nil {
		if err := sc.WriteFile("host-ca.crt", ca); err != nil {
			return err
		}
		env = append(env, "NODE_EXTRA_CA_CERTS=/scratch/host-ca.crt")
	}
	for _, dir := range []string{"out", "home", "cache"} {
		if err := sc.Mkdir(dir); err != nil {
			return err
		}
	}
	args := append([]string{"npm", "install", "-g", "--prefix", "/scratch/out", "--no-fund", "--no-audit",
		"--no-update-notifier"}, d.NPM...)
	steps := [][]string{args}
	if len(d.NPMCheck) > 0 {
		steps = append(steps, d.NPMCheck)
	}
	for _, a := range steps {
		bd.log.Line("+ (sandbox) " + strings.Join(a, " "))
		out, err := sb.Run(ctx, sc, sandbox.Cmd{Args: a, Network: true, Root: bd.root, Env: append(env,
			"PATH=/scratch/out/bin:/usr/local/bin:/usr/bin:/bin"), Timeout: npmTimeout, MaxOutput: 256 << 10})
		for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			bd.log.Line(line)
		}
		if err != nil {
			return fmt.Errorf("%s (sandboxed): %w", a[0], err)
		}
	}
	for _, sub := range []string{"lib", "bin"} {
		if err := sc.CopyTree("out/"+sub, filepath.Join(bd.root, "usr", "local", sub), npmLimits); err != nil {
			return fmt.Errorf("copying npm's /usr/local/%s into the image: %w", sub, err)
		}
	}
	return nil
}
