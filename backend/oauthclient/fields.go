package oauthclient

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
)

// maxFieldValue bounds a kept response field: they are identifiers and
// URLs (Salesforce's instance_url, Slack's team id), never documents.
const maxFieldValue = 1024

// jsonFields picks the wanted fields of a JSON token response. A wanted
// name is a key or a dotted path into nested objects ("team.id"); only
// strings, numbers and booleans are kept, and only printable ASCII.
func jsonFields(data []byte, wanted []string) map[string]string {
	if len(wanted) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc map[string]any
	if dec.Decode(&doc) != nil {
		return nil
	}
	kept := map[string]string{}
	for _, name := range wanted {
		if SecretField(name) {
			continue
		}
		var v any = doc
		for _, part := range strings.Split(name, ".") {
			obj, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = obj[part]
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case json.Number:
			s = v.String()
		case bool:
			s = "false"
			if v {
				s = "true"
			}
		default:
			continue
		}
		if plainField(s) {
			kept[name] = s
		}
	}
	return kept
}

// formFields picks the wanted fields of a form-encoded token response.
func formFields(vals url.Values, wanted []string) map[string]string {
	if len(wanted) == 0 {
		return nil
	}
	kept := map[string]string{}
	for _, name := range wanted {
		if s := vals.Get(name); vals.Has(name) && !SecretField(name) && plainField(s) {
			kept[name] = s
		}
	}
	return kept
}

func plainField(s string) bool {
	if len(s) > maxFieldValue {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// SecretField reports whether a response field may hold a credential and
// so is never kept, whatever is configured: tokens, secrets, passwords,
// assertions and signatures.
func SecretField(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"token", "secret", "password", "assertion", "signature", "code"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}
