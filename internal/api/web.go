package api

// WebInfo is GET /v1/web: where the browser UI is and how to log in.
type WebInfo struct {
	// LoginURL carries the web token; opening it logs a browser in.
	LoginURL string `json:"login_url"`
}
