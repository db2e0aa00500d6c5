package members

import "testing"

// FuzzValidateName: names end up in file names and metric labels.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"mom", "../x", "", "a.b-c_d", "-x", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateName(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > MaxNameLen || s[0] == '.' || s[0] == '-' || s[0] == '_' {
			t.Fatalf("accepted %q", s)
		}
		for _, c := range []byte(s) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				t.Fatalf("accepted %q with byte %q", s, c)
			}
		}
	})
}
