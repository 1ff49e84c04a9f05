"""Configuration: one YAML file validated once at start-up into typed, frozen models.

Import the pieces from their modules (``gateway.config.load``, ``gateway.config.model``); this
package imports nothing eagerly so that driver config modules can use ``gateway.config.common``.
"""

__all__: list[str] = []
