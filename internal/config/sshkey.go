package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// keyComment is the comment on keys EnsureSSHKey creates.
const keyComment = "banger"

// EnsureSSHKey makes sure an SSH key pair exists at path (private key,
// OpenSSH format, mode 0600, in a 0700 directory) and path+".pub", creating
// an ed25519 pair when the private key is missing. An existing private key
// is kept (its mode tightened to 0600 if looser) and a missing .pub is
// rewritten from it. It returns the public key as an authorized_keys line.
func EnsureSSHKey(path string) (pub string, err error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createSSHKey(path)
	case err != nil:
		return "", fmt.Errorf("reading ssh key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return "", fmt.Errorf("ssh key %s is not a usable private key (move it aside and banger creates a new one): %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("tightening mode of ssh key %s: %w", path, err)
		}
	}
	line := authorizedLine(signer.PublicKey())
	if _, err := os.Stat(path + ".pub"); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(path+".pub", []byte(line+"\n"), 0o644); err != nil {
			return "", err
		}
	}
	return line, nil
}

func authorizedLine(k ssh.PublicKey) string {
	return string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(k))) + " " + keyComment
}

func createSSHKey(path string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating ssh key directory: %w", err)
	}
	pubKey, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generating ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, keyComment)
	if err != nil {
		return "", fmt.Errorf("encoding ssh key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pubKey)
	if err != nil {
		return "", fmt.Errorf("encoding ssh public key: %w", err)
	}
	line := authorizedLine(sshPub)
	// The public half first: a private key on disk means the pair is done.
	if err := writeFileAtomic(path+".pub", []byte(line+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		os.Remove(path + ".pub")
		return "", err
	}
	return line, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it into place, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
