//! Facts about the official R4 package's example instances, shared by the tests that run
//! them through the validator and through the server.

/// Resource types whose instances in the package are definitions, not examples.
pub const DEFINITION_TYPES: &[&str] = &[
    "StructureDefinition",
    "SearchParameter",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "OperationDefinition",
    "CompartmentDefinition",
    "NamingSystem",
    "ImplementationGuide",
    "CapabilityStatement",
    "StructureMap",
    "GraphDefinition",
    "MessageDefinition",
    "TerminologyCapabilities",
    "ExampleScenario",
];

/// True when instances of `resource_type` in the package are definitions.
pub fn is_definition(resource_type: &str) -> bool {
    DEFINITION_TYPES.contains(&resource_type)
}

/// Examples of the official package that are genuinely invalid, with the reason.
pub const KNOWN_INVALID_EXAMPLES: &[(&str, &str)] = &[(
    "Questionnaire-qs1.json",
    "32 nested items lack the required linkId (Questionnaire.item.linkId is 1..1)",
)];
