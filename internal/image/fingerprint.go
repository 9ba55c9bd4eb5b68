package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"banger/internal/api"
)

func Sorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	c := slices.Clone(s)
	sort.Strings(c)
	return slices.Compact(c)
}

// FileSHA256 returns the hex sha256 of a file's bytes.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ArtefactFingerprint hashes a recipe (or source description) and the bytes
// of every artefact present in dir, streaming.
func ArtefactFingerprint(recipe string, dir string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\n", recipe)
	for _, name := range []string{KernelFile, InitrdFile, RootfsFile, WorkSeedFile} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := hashInto(h, p); err != nil {
			return "", fmt.Errorf("hashing %s: %w", name, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Describe fills the artefact paths (under final) and sizes (measured in
// dir) of an image directory.
func Describe(final, dir string) api.Image {
	img := api.Image{Dir: final}
	set := func(name string, path *string, size *int64) {
		if n := FileSize(filepath.Join(dir, name)); n > 0 {
			*path, *size = filepath.Join(final, name), n
		}
	}
	set(KernelFile, &img.Kernel, &img.KernelSize)
	set(VmlinuxFile, &img.Vmlinux, &img.VmlinuxSize)
	set(InitrdFile, &img.Initrd, &img.InitrdSize)
	set(RootfsFile, &img.Rootfs, &img.RootfsSize)
	set(WorkSeedFile, &img.WorkSeed, &img.WorkSeedSize)
	return img
}
