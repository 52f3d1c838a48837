package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"

	"kpaas.dev/appliance/internal/harbor"
)

// Harbor (v2.15) checks a user's password with PBKDF2-SHA256 at 600,000
// iterations on every request that carries it: every token a push asks
// for, one or more per repository. That is about 0.1 s of Harbor's CPU
// each on a server, and 40 s to over a minute on an emulated node, where
// nginx gave up on the token service (504) again and again. A robot
// account's secret is checked with 4,096 iterations. So a push as a user
// (not already a robot) first makes a system robot account that may pull
// and push in the push's projects and nothing else, valid for a day,
// pushes as it, and removes it at the end.

// RobotPrefix begins the name of every robot account a push makes
// (harbor.RobotLogin + RobotPrefix + 8 hex digits is its login).
const RobotPrefix = "kpaas-push-"

// asRobot switches c to a new robot account for projects and returns the
// function that removes it. When Harbor refuses one (the user is not a
// system administrator, say), the push goes on as the user, and says so.
func asRobot(ctx context.Context, api *harbor.Client, c *client, o Options, projects []string) (remove func()) {
	if c.user == "" || strings.HasPrefix(c.user, harbor.RobotLogin) || len(projects) == 0 {
		return func() {}
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	req := harbor.RobotCreate{
		Name:        RobotPrefix + hex.EncodeToString(suffix[:]),
		Description: "kpaas push: pushes a bundle's images and charts; removed when the push ends",
		Level:       "system", Duration: 1,
	}
	for _, p := range projects {
		req.Permissions = append(req.Permissions, harbor.RobotPermission{Kind: "project", Namespace: p, Access: []harbor.Access{
			{Resource: "repository", Action: "pull"}, {Resource: "repository", Action: "push"},
		}})
	}
	robot, err := api.CreateRobot(ctx, req)
	if err != nil {
		progressf(o.Progress, "harbor: pushing as %s, without a robot account (%v)\n", c.user, err)
		return func() {}
	}
	progressf(o.Progress, "harbor: pushing as robot account %s (pull and push in %s; removed when the push ends)\n", robot.Name, strings.Join(projects, ", "))
	c.useCredentials(robot.Name, robot.Secret)
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*o.RequestTimeout)
		defer cancel()
		if err := api.DeleteRobot(ctx, robot.ID); err != nil {
			progressf(o.Progress, "harbor: robot account %s not removed (it expires in a day): %v\n", robot.Name, err)
		}
	}
}

// harborAPI is a client of Harbor's API at c's registry, as o's user.
func harborAPI(c *client, o Options) (*harbor.Client, error) {
	return harbor.New(c.base.String(),
		harbor.WithBasicAuth(o.Username, o.Password),
		harbor.WithHTTPClient(c.hc),
		harbor.WithTimeout(o.RequestTimeout),
		harbor.WithRetry(o.Retry))
}
