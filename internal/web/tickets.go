package web

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"banger/internal/api"
)

// TicketTTL is how long a ticket from POST /v1/tickets may wait for its one
// use; maxTickets bounds the tickets outstanding at once.
const (
	TicketTTL  = 30 * time.Second
	maxTickets = 256
)

// Ticket is POST /v1/tickets: a single-use secret the page passes as
// ?ticket= to GET /v1/events (EventSource) and the terminal WebSocket,
// which cannot carry the Authorization header.
type Ticket struct {
	Ticket    string `json:"ticket"`
	ExpiresIn int    `json:"expires_in"` // seconds
}

// ticketBox holds the outstanding tickets. mu guards m.
type ticketBox struct {
	mu sync.Mutex
	m  map[string]time.Time // ticket → expiry
}

// issue makes a ticket, dropping expired ones and, at the bound, the
// oldest.
func (b *ticketBox) issue(now time.Time) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	t := hex.EncodeToString(raw)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]time.Time{}
	}
	oldest, oldestAt := "", time.Time{}
	for k, exp := range b.m {
		if !now.Before(exp) {
			delete(b.m, k)
			continue
		}
		if oldest == "" || exp.Before(oldestAt) {
			oldest, oldestAt = k, exp
		}
	}
	if len(b.m) >= maxTickets {
		delete(b.m, oldest)
	}
	b.m[t] = now.Add(TicketTTL)
	return t, nil
}

// take uses up t: true when it was outstanding and not expired.
func (b *ticketBox) take(t string) bool {
	if t == "" {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	exp, ok := b.m[t]
	delete(b.m, t)
	return ok && time.Now().Before(exp)
}

// ticket is POST /v1/tickets (behind requireToken).
func (s *Server) ticket(w http.ResponseWriter, r *http.Request) {
	t, err := s.tickets.issue(time.Now())
	if err != nil {
		writeError(w, r, http.StatusInternalServerError, api.Internal("making a ticket: %v", err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Ticket{Ticket: t, ExpiresIn: int(TicketTTL / time.Second)})
}
