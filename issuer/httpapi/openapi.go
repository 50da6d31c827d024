package httpapi

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// OpenAPI is the API's OpenAPI 3.1 document. The integration tests check
// every request and answer against it, so it cannot drift from the routes.
//
//go:embed openapi.yaml
var OpenAPI []byte

func getOpenAPI(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/yaml")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.Send(OpenAPI)
}
