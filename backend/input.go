package backend

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Vault's framework checks a field's type before a path's callback runs.
// checkInput checks what a type cannot say, the same way for every path:
// sizes, control characters, negative numbers and AllowedValues (which the
// framework only publishes in OpenAPI). A refused request is a 400 naming
// the field, before anything is stored or sent upstream. The value itself
// is never echoed: it may be a secret.
const (
	maxNameBytes  = 128
	maxValueBytes = 2048      // any other string, list item, token_params key or value
	maxListBytes  = 8 << 10   // all items of one list together
	maxListItems  = 100       // items of one list, entries of one map
	maxTokenBytes = 16 << 10  // refresh tokens, codes and client secrets can be long JWTs
	maxPEMBytes   = 256 << 10 // a CA bundle
)

// inputRule is how one field's strings are checked.
type inputRule struct {
	maxBytes int
	// multiline allows tab, LF and CR (PEM).
	multiline bool
	// unchecked: the field is never used (the callback's
	// error_description), so any text is accepted.
	unchecked bool
}

func inputRuleFor(field string) inputRule {
	switch field {
	case "name":
		return inputRule{maxBytes: maxNameBytes}
	case "refresh_token", "code", "client_secret":
		return inputRule{maxBytes: maxTokenBytes}
	case "ca_pem", "client_private_key":
		return inputRule{maxBytes: maxPEMBytes, multiline: true}
	case "error_description":
		return inputRule{unchecked: true}
	}
	return inputRule{maxBytes: maxValueBytes}
}

// guardInputs puts checkInput in front of every operation of paths.
func guardInputs(paths []*framework.Path) []*framework.Path {
	for _, p := range paths {
		for _, h := range p.Operations {
			op, ok := h.(*framework.PathOperation)
			if !ok || op.Callback == nil {
				continue
			}
			next := op.Callback
			op.Callback = func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
				if err := checkInput(d); err != nil {
					return logical.ErrorResponse(err.Error()), nil
				}
				return next(ctx, req, d)
			}
		}
	}
	return paths
}

// checkInput checks every known field the request carries, in name order
// so the answer does not vary between calls.
func checkInput(d *framework.FieldData) error {
	fields := make([]string, 0, len(d.Raw))
	for k := range d.Raw {
		if _, known := d.Schema[k]; known {
			fields = append(fields, k)
		}
	}
	sort.Strings(fields)
	for _, field := range fields {
		v, ok, err := d.GetOkErr(field)
		if err != nil {
			return fmt.Errorf("%s: %s", field, err)
		}
		if !ok {
			continue
		}
		if err := checkValue(field, d.Schema[field], v); err != nil {
			return fmt.Errorf("%s: %s", field, err)
		}
	}
	return nil
}

func checkValue(field string, schema *framework.FieldSchema, v any) error {
	rule := inputRuleFor(field)
	if rule.unchecked {
		return nil
	}
	switch v := v.(type) {
	case string:
		if err := checkString(v, rule); err != nil {
			return err
		}
		if len(schema.AllowedValues) > 0 && !allowed(schema.AllowedValues, v) {
			return fmt.Errorf("must be one of %s", allowedList(schema.AllowedValues))
		}
	case []string:
		if len(v) > maxListItems {
			return fmt.Errorf("at most %d items are allowed, got %d", maxListItems, len(v))
		}
		total := 0
		for _, item := range v {
			total += len(item)
			// Whitespace separates items (normalizeScopes splits on it).
			if err := checkString(item, inputRule{maxBytes: rule.maxBytes, multiline: true}); err != nil {
				return fmt.Errorf("an item %s", err)
			}
		}
		if total > maxListBytes {
			return fmt.Errorf("the items together must be at most %d bytes long, got %d", maxListBytes, total)
		}
	case map[string]string:
		if len(v) > maxListItems {
			return fmt.Errorf("at most %d entries are allowed, got %d", maxListItems, len(v))
		}
		for k, val := range v {
			if k == "" {
				return fmt.Errorf("a key is empty")
			}
			if err := checkString(k, rule); err != nil {
				return fmt.Errorf("a key %s", err)
			}
			if err := checkString(val, rule); err != nil {
				return fmt.Errorf("the value of %q %s", k, err)
			}
		}
	case int:
		// Every number the engine takes is a count or a duration.
		if v < 0 {
			return fmt.Errorf("must not be negative")
		}
	}
	return nil
}

// checkString refuses invalid UTF-8, control characters and overlong
// values. Its messages start with a verb so callers can prefix them.
func checkString(s string, rule inputRule) error {
	if len(s) > rule.maxBytes {
		return fmt.Errorf("must be at most %d bytes long, got %d", rule.maxBytes, len(s))
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, r := range s {
		if rule.multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("contains a control character (U+%04X)", r)
		}
	}
	return nil
}

func allowed(values []any, v string) bool {
	for _, a := range values {
		if s, ok := a.(string); ok && s == v {
			return true
		}
	}
	return false
}

func allowedList(values []any) string {
	names := make([]string, 0, len(values))
	for _, a := range values {
		names = append(names, fmt.Sprint(a))
	}
	return strings.Join(names, ", ")
}
