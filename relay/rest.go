package relay

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Credentials is one TURN REST credential pair (draft-uberti-behave-turn-rest,
// coturn's use-auth-secret).
type Credentials struct {
	Username string    `json:"username"`
	Password string    `json:"password"`
	TTL      int       `json:"ttl"` // seconds
	Expires  time.Time `json:"-"`
}

// MintCredentials returns a credential valid until now+ttl for the optional
// id: username "<unix-expiry>" or "<unix-expiry>:<id>", password
// base64(HMAC-SHA1(secret, username)), exactly as coturn verifies them.
func MintCredentials(secret, id string, ttl time.Duration, now time.Time) Credentials {
	exp := now.Add(ttl).Truncate(time.Second)
	user := strconv.FormatInt(exp.Unix(), 10)
	if id != "" {
		user += ":" + id
	}
	return Credentials{Username: user, Password: RESTPassword(secret, user), TTL: int(ttl / time.Second), Expires: exp}
}

// RESTPassword returns base64(HMAC-SHA1(secret, username)) with standard padding.
func RESTPassword(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// ParseRESTUsername splits a REST username "<unix-expiry>[:<id>]" on its
// first colon only, so Matrix IDs such as @alice:example.org survive whole.
// ok is false unless the part before the colon is a decimal timestamp.
func ParseRESTUsername(username string) (expiry time.Time, id string, ok bool) {
	ts, id, _ := strings.Cut(username, ":")
	if ts == "" || len(ts) > 12 {
		return time.Time{}, "", false
	}
	for _, c := range ts {
		if c < '0' || c > '9' {
			return time.Time{}, "", false
		}
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(n, 0), id, true
}
