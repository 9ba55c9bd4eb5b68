// Package attack holds the attacks a hostile guest can make on the host
// that need no booted guest: each test performs one (a guest flooding
// operation output, opening agent streams without end, answering vm cp
// with a tar that escapes its destination, …) against the real
// host code and checks the host stays within its bounds. Attacks that need
// the package's internals live beside that code as TestAttack… tests
// (internal/vm: serial and engine log floods, diagnostics of a huge log;
// cmd/banger: terminal escapes in vm logs and operation output).
package attack
