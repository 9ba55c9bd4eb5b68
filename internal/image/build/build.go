// Package build makes banger images from images: image build boots a
// builder VM from a parent image, copies files in and runs a script (and
// the features' scripts) in it through the guest agent, shuts it down and
// captures its disks; image promote captures a stopped VM's disks. The
// capture (capture.go) resets the VM identity (SSH host keys, machine-id,
// hostname) through internal/ext4, sizes the filesystem, shrinks the
// work-seed and picks the boot set (the parent's, or a newer kernel found
// in the rootfs's /boot). The result goes through image.Finish into the
// images dir; the image catalogue (image.Service, whose FromImages the
// Builder is) stores it.
//
// It owns builder VMs (names build-<hex>, their shutdown, their cleanup on
// failure, timeout or cancel) and the capture. It must not know how VMs
// boot or stop (Guests: implemented by vm.Manager), the daemon, or how
// images are made from nothing (image/debian).
package build

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/image"
	"banger/internal/names"
	"banger/internal/progress"
	"banger/internal/revert"
)

// Stage names reported by Build after the builder VM's create stages, in
// order, and by Promote (capture onwards).
const (
	StageScript   = "script"
	StageShutdown = "shutdown"
	StageCapture  = "capture"
	StageBootSet  = "boot set"
)

// Build defaults.
const (
	DefaultBuildTimeout = 30 * time.Minute
	// builderMemoryMiB is the builder VM's memory: package installs (npm
	// above all) need more than an idle guest.
	builderMemoryMiB = 1024
	// builderHeadroom is added to the parent's rootfs for the builder's
	// system disk (sparse); the capture shrinks the result to fit.
	builderHeadroom = 4 << 30
	// guestBuildDir holds the script and helpers in the builder; it is
	// removed before the capture.
	guestBuildDir = "/tmp/banger-build"
)

// errBuildTimeout is the cause of a build's context when --timeout passes.
var errBuildTimeout = errors.New("image build timed out")

// buildRecipe is what went into a built image (api.Image.Recipe).
type buildRecipe struct {
	Kind              string   `json:"kind"` // "build"
	Parent            string   `json:"parent"`
	ParentFingerprint string   `json:"parent_fingerprint"`
	Script            string   `json:"script_sha256,omitempty"`
	Copies            []string `json:"copies,omitempty"` // "<sha256> <guest path>"
	With              []string `json:"with,omitempty"`
}

// Builder makes images from images (image.FromImages). All fields but Log
// are required.
type Builder struct {
	// Images is the catalogue the images go into: parents and VMs are read
	// from its Store, staging dirs made by its NewStaging, finished images
	// moved into its ImagesDir. It stores what Build and Promote return.
	Images *image.Service
	// Guests boots builder VMs and exports VM disks.
	Guests Guests
	// Log receives stage timings; nil discards.
	Log *slog.Logger
}

var _ image.FromImages = (*Builder)(nil)

func (bd *Builder) logger() *slog.Logger {
	if bd.Log != nil {
		return bd.Log
	}
	return slog.New(slog.DiscardHandler)
}

// buildRun is one Build run.
type buildRun struct {
	bd      *Builder
	req     api.ImageBuildRequest
	parent  api.Image
	staging string
	log     *image.BuildLog
	rep     progress.Reporter
	vm      string // the builder VM's name
	gone    bool   // the builder VM has been deleted
}

// Build makes image req.Name from image req.From: it boots a builder VM
// from the parent (its own copy-on-write system disk), copies the files in
// through the guest agent, runs the script (and the opencode script for
// --with opencode) as root with its output streamed to rep, shuts the guest
// down and captures its disks as a new managed image with its own
// fingerprint and Parent = req.From. A failing script, the timeout or a
// cancelled ctx abort the build: the builder VM and every partial file are
// removed and nothing is left in the images dir. The caller stores the
// returned image.
func (bd *Builder) Build(ctx context.Context, req api.ImageBuildRequest, rep progress.Reporter) (api.Image, error) {
	parent, err := bd.checkBuild(ctx, &req)
	if err != nil {
		return api.Image{}, err
	}
	timeout := DefaultBuildTimeout
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(req.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errBuildTimeout)
	defer cancel()
	r := revert.New()
	defer r.Fail()
	staging, err := bd.Images.NewStaging(req.Name, r)
	if err != nil {
		return api.Image{}, err
	}
	rep = progress.Logged(rep, bd.logger().With("image", req.Name))
	blog, err := image.NewBuildLog(filepath.Join(staging, image.BuildLogFile), rep, bd.Images.BuildLogMax)
	if err != nil {
		return api.Image{}, err
	}
	defer blog.Close()
	b := &buildRun{bd: bd, req: req, parent: parent, staging: staging, log: blog, rep: rep,
		vm: "build-" + randomHex(4)}
	r.Add(b.deleteBuilder)
	start := time.Now()
	img, err := b.run(ctx)
	if err != nil {
		switch {
		case errors.Is(context.Cause(ctx), errBuildTimeout):
			return api.Image{}, api.Unavailable("building image %s: timed out after %s: %w", req.Name, timeout, err).
				WithFix("give it longer with --timeout, e.g. --timeout 1h")
		case ctx.Err() != nil:
			return api.Image{}, fmt.Errorf("building image %s: cancelled: %w", req.Name, err)
		}
		return api.Image{}, fmt.Errorf("building image %s: %w", req.Name, err)
	}
	r.Success()
	bd.logger().Info("image built", "image", img.Name, "parent", parent.Name,
		"duration", time.Since(start).Round(time.Millisecond))
	return img, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// checkBuild validates a build request before anything is made, and
// returns the parent image.
func (bd *Builder) checkBuild(ctx context.Context, req *api.ImageBuildRequest) (api.Image, error) {
	if err := names.Validate(req.Name); err != nil {
		return api.Image{}, fmt.Errorf("image name: %w", err)
	}
	if dir := filepath.Join(bd.Images.ImagesDir, req.Name); exists(dir) {
		return api.Image{}, api.AlreadyExists("image directory %s already exists", dir).
			WithFix("pick another name")
	}
	if req.From == "" {
		return api.Image{}, api.Invalid("image build needs a parent image").WithFix("--from IMAGE (see banger image list)")
	}
	parent, err := bd.Images.Store.GetImage(ctx, req.From)
	if err != nil {
		return api.Image{}, err
	}
	if err := image.CheckFeatures(req.With); err != nil {
		return api.Image{}, err
	}
	if req.Script == "" && req.ScriptFile == nil && len(req.Copy) == 0 && len(req.With) == 0 {
		return api.Image{}, api.Invalid("nothing to build: no script, no files, no features").
			WithFix("give --script FILE, --copy SRC:DST or --with opencode")
	}
	if req.Script != "" && req.ScriptFile != nil {
		return api.Image{}, api.Invalid("the request has both a script path and a script file").
			WithFix("send one: the CLI sends the file's contents")
	}
	if req.Script != "" {
		if err := checkScript(req.Script); err != nil {
			return api.Image{}, err
		}
	}
	if req.ScriptFile != nil && len(req.ScriptFile.Data) == 0 {
		return api.Image{}, api.Invalid("--script %s is empty", req.ScriptFile.Name).WithFix("give a script with commands in it")
	}
	for _, c := range req.Copy {
		if err := checkCopy(c); err != nil {
			return api.Image{}, err
		}
	}
	for _, kv := range req.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsAny(k, " \t\n") {
			return api.Image{}, api.Invalid("--env %q is not KEY=VALUE", kv).WithFix("--env KEY=VALUE")
		}
	}
	if req.Size != 0 && req.Size < image.MinRootfsSize {
		return api.Image{}, api.Invalid("--size %d MiB is too small for a root filesystem", req.Size>>20).
			WithFix(fmt.Sprintf("--size %dMiB or more, or leave it out to keep the parent's size", image.MinRootfsSize>>20))
	}
	if req.TimeoutSeconds < 0 {
		return api.Image{}, api.Invalid("--timeout must be positive").WithFix("--timeout 30m")
	}
	return parent, nil
}

// checkScript needs an absolute path to an executable regular file.
func checkScript(p string) error {
	if !filepath.IsAbs(p) {
		return api.Invalid("--script %s: not an absolute path", p).WithFix("pass the script's absolute path")
	}
	fi, err := os.Stat(p)
	if err != nil {
		return api.Invalid("--script %s: %w", p, err).WithFix("check the path")
	}
	if !fi.Mode().IsRegular() {
		return api.Invalid("--script %s: not a regular file", p).WithFix("point --script at a script file")
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return api.Invalid("--script %s is not executable", p).WithFix("chmod +x " + p)
	}
	return nil
}

// checkCopy needs an uploaded file or a readable regular host file (a
// path only a root peer may send, checked by the daemon), and an absolute
// guest path.
func checkCopy(c api.ImageCopy) error {
	if c.File != nil {
		if c.Src != "" {
			return api.Invalid("--copy %s: both a host path and a file's contents", c.Dst).
				WithFix("send one: the CLI sends the file's contents")
		}
		return checkDst(c.File.Name, c.Dst)
	}
	if !filepath.IsAbs(c.Src) {
		return api.Invalid("--copy %s:%s: the source is not an absolute path", c.Src, c.Dst).
			WithFix("pass the source's absolute path")
	}
	fi, err := os.Stat(c.Src)
	if err != nil {
		return api.Invalid("--copy %s:%s: %w", c.Src, c.Dst, err).WithFix("check the source path")
	}
	if !fi.Mode().IsRegular() {
		return api.Invalid("--copy %s:%s: the source is not a regular file", c.Src, c.Dst).
			WithFix("copy files one by one (or pack a directory with tar and unpack it in --script)")
	}
	return checkDst(c.Src, c.Dst)
}

func checkDst(src, dst string) error {
	if !path.IsAbs(dst) || strings.HasSuffix(dst, "/") || path.Clean(dst) != dst || dst == "/" {
		return api.Invalid("--copy %s:%s: the destination must be a clean absolute file path in the guest", src, dst).
			WithFix("e.g. --copy ./app.conf:/etc/app.conf")
	}
	return nil
}

func (b *buildRun) run(ctx context.Context) (api.Image, error) {
	if err := b.boot(ctx); err != nil {
		return api.Image{}, err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{image.StageCopy, b.copyIn},
		{StageScript, b.runScripts},
		{StageShutdown, b.shutdown},
		{StageCapture, b.capture},
		{image.StageWorkSeed, func(ctx context.Context) error {
			return shrinkWrap(ctx, filepath.Join(b.staging, image.WorkSeedFile))
		}},
	}
	for _, st := range steps {
		if err := progress.Run(b.rep, st.name, func() error { return st.fn(ctx) }); err != nil {
			return api.Image{}, err
		}
	}
	img := api.Image{Name: b.req.Name, Parent: b.parent.Name, Source: "build", CreatedAt: time.Now().UTC()}
	err := progress.Run(b.rep, StageBootSet, func() error {
		var err error
		img.KernelVersion, img.Engines, err = bootSet(ctx, b.parent, filepath.Join(b.staging, image.RootfsFile), b.staging)
		b.rep.Detail("kernel " + img.KernelVersion)
		return err
	})
	if err != nil {
		return api.Image{}, err
	}
	img.Features = image.Sorted(append(slices.Clone(b.parent.Features), b.req.With...))
	img.Recipe, err = b.recipe()
	if err != nil {
		return api.Image{}, err
	}
	err = progress.Run(b.rep, image.StageFingerprint, func() error {
		img, err = image.Finish(b.bd.Images.ImagesDir, b.staging, img)
		if err == nil {
			b.rep.Detail(img.Fingerprint[:16])
		}
		return err
	})
	return img, err
}

// boot makes the builder VM with room to install into (its system disk
// grown to max(--size, parent + 4 GiB)) and boots it.
func (b *buildRun) boot(ctx context.Context) error {
	b.log.Line(fmt.Sprintf("+ booting builder vm %s from image %s", b.vm, b.parent.Name))
	_, err := b.bd.Guests.Create(ctx, api.VMCreateRequest{Name: b.vm, Image: b.parent.Name,
		MemoryMiB: builderMemoryMiB, NoStart: true}, b.rep)
	if err != nil {
		b.gone = true // a failed create removes its VM itself
		return fmt.Errorf("making the builder vm: %w", err)
	}
	size := max(b.req.Size, b.parent.RootfsSize+builderHeadroom)
	if err := b.bd.Guests.GrowSystemDisk(ctx, b.vm, size); api.KindOf(err) == api.KindFailedPrecondition {
		// e.g. a dm-snapshot disk: build within the parent's free space.
		b.log.Line("+ the builder's system disk cannot grow (" + err.Error() + "); using the parent's free space")
	} else if err != nil {
		return fmt.Errorf("giving the builder vm room: %w", err)
	}
	if _, err := b.bd.Guests.Start(ctx, b.vm, b.rep); err != nil {
		return fmt.Errorf("booting the builder vm: %w", err)
	}
	return nil
}

// growRoot grows the builder's root filesystem to its (grown) disk, online.
func (b *buildRun) growRoot(ctx context.Context) error {
	w := b.log.Writer()
	code, err := guestExec(ctx, b.bd.Guests, b.vm, []string{"resize2fs", "/dev/vda"}, nil, nil, w)
	w.Close()
	if err != nil {
		return fmt.Errorf("growing the builder's root filesystem: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("growing the builder's root filesystem: resize2fs exit %d: %s", code, b.log.Tail())
	}
	return nil
}

// copyIn grows the builder's root filesystem, then puts the --copy files,
// the script and the opencode helpers into it.
func (b *buildRun) copyIn(ctx context.Context) error {
	if err := b.growRoot(ctx); err != nil {
		return err
	}
	n := 0
	put := func(src, dst string, mode uint32) error {
		f, err := os.Open(src)
		if err != nil {
			return api.Invalid("%s: %w", src, err).WithFix("check the path")
		}
		defer f.Close()
		if mode == 0 {
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			mode = uint32(fi.Mode().Perm())
		}
		b.log.Line(fmt.Sprintf("+ copy %s → %s (%o)", src, dst, mode))
		n++
		return guestPut(ctx, b.bd.Guests, b.vm, dst, mode, f)
	}
	upload := func(f *api.FileUpload, dst string, mode uint32) error {
		if mode == 0 {
			mode = f.Mode & 0o7777
		}
		if mode == 0 {
			mode = 0o644
		}
		b.log.Line(fmt.Sprintf("+ copy %s → %s (%o)", f.Name, dst, mode))
		n++
		return guestPut(ctx, b.bd.Guests, b.vm, dst, mode, bytes.NewReader(f.Data))
	}
	for _, c := range b.req.Copy {
		var err error
		if c.File != nil {
			err = upload(c.File, c.Dst, 0)
		} else {
			err = put(c.Src, c.Dst, 0)
		}
		if err != nil {
			return err
		}
	}
	if b.req.ScriptFile != nil {
		if err := upload(b.req.ScriptFile, guestBuildDir+"/script", 0o755); err != nil {
			return err
		}
	}
	if b.req.Script != "" {
		if err := put(b.req.Script, guestBuildDir+"/script", 0o755); err != nil {
			return err
		}
	}
	for _, d := range feature.Default.Of(b.req.With) {
		if err := guestPut(ctx, b.bd.Guests, b.vm, featureScript(d), 0o755, bytes.NewReader(d.Script)); err != nil {
			return err
		}
		n++
	}
	if len(b.req.With) > 0 {
		if _, err := os.Stat(feature.HostCABundle); err == nil {
			if err := put(feature.HostCABundle, guestBuildDir+"/host-ca.crt", 0o644); err != nil {
				return err
			}
		}
	}
	b.rep.Detail(fmt.Sprintf("%d files", n))
	return nil
}

// featureScript is where a feature's script is put in the builder.
func featureScript(d feature.Descriptor) string { return guestBuildDir + "/" + d.Name + ".sh" }

// runScripts runs the script, then the features' scripts, as root in /root,
// each line of output going to the build log and the reporter.
func (b *buildRun) runScripts(ctx context.Context) error {
	env := map[string]string{"DEBIAN_FRONTEND": "noninteractive", "BANGER_IMAGE": b.req.Name,
		"BANGER_PARENT": b.parent.Name}
	for _, kv := range b.req.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var scripts []string
	if b.req.Script != "" || b.req.ScriptFile != nil {
		scripts = append(scripts, guestBuildDir+"/script")
	}
	for _, d := range feature.Default.Of(b.req.With) {
		if _, err := os.Stat(feature.HostCABundle); err == nil {
			env[feature.HostCAEnv] = guestBuildDir + "/host-ca.crt"
		}
		scripts = append(scripts, featureScript(d))
	}
	for _, sc := range scripts {
		b.log.Line("+ " + sc)
		w := b.log.Writer()
		code, err := guestExec(ctx, b.bd.Guests, b.vm, []string{sc}, env, nil, w)
		w.Close()
		if err != nil {
			return fmt.Errorf("running %s: %w", sc, err)
		}
		if code != 0 {
			return api.FailedPrecondition("the build script %s exited with code %d; last output:\n%s",
				b.scriptName(sc), code, b.log.Tail()).WithFix("fix the script; its whole output is above")
		}
	}
	return nil
}

func (b *buildRun) scriptName(guest string) string {
	if guest == guestBuildDir+"/script" {
		if b.req.ScriptFile != nil {
			return b.req.ScriptFile.Name
		}
		return b.req.Script
	}
	name := strings.TrimSuffix(path.Base(guest), ".sh")
	return name + ".sh (--with " + name + ")"
}

// cleanGuest drops the build's files and apt's caches (as image create
// does) and flushes the disks. It does not end the guest: Stop does.
const cleanGuest = `rm -rf ` + guestBuildDir + `
if command -v apt-get >/dev/null; then apt-get clean; fi
rm -rf /var/lib/apt/lists/* /root/.npm /tmp/* /var/tmp/*
sync`

// shutdown cleans the guest, then stops the builder VM the way every VM
// stops (Guests.Stop: vm.Manager asks the guest, through its agent, for
// the action that ends its engine — power off under QEMU, reboot under
// Firecracker, which has no power-off — waits for the engine to exit and
// kills it only if the guest hangs).
func (b *buildRun) shutdown(ctx context.Context) error {
	w := b.log.Writer()
	code, err := guestExec(ctx, b.bd.Guests, b.vm, []string{"/bin/sh", "-c", cleanGuest}, nil, nil, w)
	w.Close()
	if err != nil {
		return fmt.Errorf("cleaning the builder: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("cleaning the builder: exit %d: %s", code, b.log.Tail())
	}
	if _, err := b.bd.Guests.Stop(ctx, b.vm, progress.Nop{}); err != nil {
		return fmt.Errorf("stopping the builder vm: %w", err)
	}
	return nil
}

// capture copies the builder's disks into staging, deletes the builder and
// makes the rootfs an image's (identity reset, --size applied).
func (b *buildRun) capture(ctx context.Context) error {
	rootfs := filepath.Join(b.staging, image.RootfsFile)
	if err := b.bd.Guests.ExportDisks(ctx, b.vm, rootfs, filepath.Join(b.staging, image.WorkSeedFile)); err != nil {
		return err
	}
	b.deleteBuilder()
	if err := resetIdentity(ctx, rootfs); err != nil {
		return err
	}
	if b.req.Size > 0 {
		if err := resizeFS(ctx, rootfs, b.req.Size); err != nil {
			return err
		}
	} else if err := fitFS(ctx, rootfs, b.parent.RootfsSize); err != nil {
		return err
	}
	b.rep.Detail(fmt.Sprintf("rootfs %d MiB", image.FileSize(rootfs)>>20))
	return nil
}

// deleteBuilder removes the builder VM (once), even when ctx was cancelled.
func (b *buildRun) deleteBuilder() {
	if b.gone {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.bd.Guests.Delete(ctx, b.vm, progress.Nop{}); err != nil && !api.IsNotFound(err) {
		b.bd.logger().Error("deleting the builder vm", "vm", b.vm, "err", err)
		return
	}
	b.gone = true
}

// recipe describes the build (hashes, not contents).
func (b *buildRun) recipe() (string, error) {
	r := buildRecipe{Kind: "build", Parent: b.parent.Name, ParentFingerprint: b.parent.Fingerprint,
		With: image.Sorted(b.req.With)}
	if b.req.Script != "" {
		sum, err := image.FileSHA256(b.req.Script)
		if err != nil {
			return "", err
		}
		r.Script = sum
	}
	if b.req.ScriptFile != nil {
		r.Script = bytesSHA256(b.req.ScriptFile.Data)
	}
	for _, c := range b.req.Copy {
		if c.File != nil {
			r.Copies = append(r.Copies, bytesSHA256(c.File.Data)+" "+c.Dst)
			continue
		}
		sum, err := image.FileSHA256(c.Src)
		if err != nil {
			return "", err
		}
		r.Copies = append(r.Copies, sum+" "+c.Dst)
	}
	j, err := json.Marshal(r)
	return string(j), err
}

// bytesSHA256 is the hex SHA-256 of an uploaded file (as image.FileSHA256
// is of a host file), for the recipe.
func bytesSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
