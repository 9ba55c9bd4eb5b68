package api

import "strings"

// Action is a fix that is a banger command, as data: Verb is the command's
// noun and verb ("vm start", "image delete"), Args its arguments and flags
// (["--force", "dev"]). The CLI prints it as `banger vm start dev`; the web
// UI shows a button or plain words, never a command line.
type Action struct {
	Verb string   `json:"verb"`
	Args []string `json:"args,omitempty"`
}

// CommandLine is the action as a shell command line, arguments quoted
// when they need it.
func (a Action) CommandLine() string {
	parts := []string{"banger", a.Verb}
	for _, arg := range a.Args {
		parts = append(parts, shellQuote(arg))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@+,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
