package dialplan

// HuntGroup ties a pilot number on a gateway to a dial plan, as the source
// product's UM hunt groups do. It has the fields of the proxy's
// `gateways[].hunt_groups[]` entries, so that a slice of those converts
// element by element.
type HuntGroup struct {
	Pilot    string
	DialPlan string
}

// Resolve chooses the plan of a call that a gateway sends to the pilot
// number user (the Request-URI user part, as CheckURI takes it).
//
// The first group in order whose Pilot matches wins; without one, the plan
// named defaultPlan (the gateway's `dial_plan`, may be empty) applies. A
// pilot made of digits, an optional leading '+', visual separators and
// spaces is a telephone number: it matches a user part with the same '+' and
// digits, separators ignored, tel parameters after ';' ignored (so "5000"
// matches "5000;phone-context=pbx.example.com" and "+1 (425) 555-0100"
// matches "+14255550100"). Any other pilot matches a user part equal to it,
// case-sensitively, as RFC 3261 compares user parts.
//
// No match and no default: 404 "no dial plan for this number" (Reason
// no_dial_plan). A matching group or default that names no plan in plans (a
// configuration that skipped validation): 500, Reason unknown_dial_plan.
// The Plan is the zero Plan whenever the Decision is a refusal.
func Resolve(plans Plans, defaultPlan string, groups []HuntGroup, user string) (Plan, Decision) {
	name := defaultPlan
	for _, g := range groups {
		if pilotMatches(g.Pilot, user) {
			name = g.DialPlan
			break
		}
	}
	if name == "" {
		return Plan{}, refuse(404, ReasonNoDialPlan, "no dial plan for this number")
	}
	p, ok := plans.Lookup(name)
	if !ok {
		return Plan{}, refuse(500, ReasonUnknownDialPlan, "dial plan not configured")
	}
	return p, allowed
}

func pilotMatches(pilot, user string) bool {
	if pilot == "" {
		return false
	}
	if !isTelephoneNumber(pilot, true) {
		return pilot == user
	}
	user = numberPart(user)
	if !isTelephoneNumber(user, false) {
		return false
	}
	i, j := 0, 0
	for {
		for i < len(pilot) && (isVisualSeparator(pilot[i]) || pilot[i] == ' ') {
			i++
		}
		for j < len(user) && isVisualSeparator(user[j]) {
			j++
		}
		if i == len(pilot) || j == len(user) {
			return i == len(pilot) && j == len(user)
		}
		if pilot[i] != user[j] {
			return false
		}
		i++
		j++
	}
}

// isTelephoneNumber reports an optional '+' then digits and visual
// separators (and spaces, when spaces is true), with at least one digit.
func isTelephoneNumber(s string, spaces bool) bool {
	if len(s) > 0 && s[0] == '+' {
		s = s[1:]
	}
	digits := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case isVisualSeparator(c), spaces && c == ' ':
		default:
			return false
		}
	}
	return digits > 0
}
